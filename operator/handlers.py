"""The kopf handlers of VineWorkflows: thin glue between kopf and the operator's parts.

Exists so that what kopf calls, and when, is visible on one page:

* indexes of the kinds the operator creates (pods, Deployments, StatefulSets, Services,
  Jobs, and PodDisruptionBudgets / NetworkPolicies when they are on), watched with the
  server-side selector `app.kubernetes.io/managed-by=kubevine-operator` and keyed by
  (namespace, workflow): every read of a child comes from them (`kubevine.operator.cache`);
* create / resume / spec update → validate the spec; invalid: `Valid=False`, a Warning
  Event, nothing created, `kopf.PermanentError`; valid: ensure the fixed children
  (`kubevine.operator.children`).
* a timer every `scale_interval_seconds` → one step (`kubevine.operator.scaler`): repair
  the children, scale the workers, report problems, write the status when it changed, and
  delete a finished workflow after `ttlSecondsAfterFinished`.
* every watch event → the workflow's phase for the operator's metrics
  (`kubevine.operator.metrics`); a DELETED event drops what was remembered about it.
* deletion → nothing to do: every child carries an owner reference and is garbage
  collected. kopf puts its finalizer on each workflow only so that it can stop the timer
  first; the timer's steps are bounded (every API and manager call has a timeout), so the
  finalizer is released within seconds of `kubectl delete`.

Handlers are registered on an explicit registry by `register()`, which `run.main` calls
with the operator's settings (the timer's interval is one of them). Waiting is never a
`sleep`: a handler that must wait raises `kopf.TemporaryError(delay=...)`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from kubevine.operator import scaler
from kubevine.operator.autoscale import pool_limits
from kubevine.operator.cache import Children, index_entry
from kubevine.operator.kube import KubeError
from kubevine.operator.naming import GROUP, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION, WorkflowRef
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import SpecError, VineWorkflowSpec, parse_spec, validate_workflow_name
from kubevine.operator.status import Observed, compute_status, merge_patch

log = logging.getLogger(__name__)

#: Seconds before a handler that hit an API error runs again.
RETRY_DELAY = 5.0
#: Longest Event message the API server accepts is 1024 bytes; stay below it.
MAX_EVENT_MESSAGE = 1000


#: The kinds the operator creates and watches: kind -> (group, version, plural).
CHILD_KINDS: dict[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "Service": ("", "v1", "services"),
    "Job": ("batch", "v1", "jobs"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
}


def watched_kinds(settings: OperatorSettings) -> list[str]:
    """The child kinds this operator watches (the optional ones only when it creates them)."""
    return [
        kind
        for kind in CHILD_KINDS
        if (kind != "PodDisruptionBudget" or settings.pod_disruption_budgets)
        and (kind != "NetworkPolicy" or settings.network_policy)
    ]


def _index_id(kind: str) -> str:
    return f"children_{kind.lower()}"


def children_of(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> Children:
    """The workflow's children from the indexes kopf passed to a handler."""
    meta = body["metadata"]
    found = {kind: indexes[_index_id(kind)] for kind in CHILD_KINDS if _index_id(kind) in indexes}
    return Children.from_indexes(found, (str(meta.get("namespace") or ""), str(meta["name"])))


def validated_spec(body: Mapping[str, Any], settings: OperatorSettings | None = None) -> VineWorkflowSpec:
    """The workflow's spec as models; `SpecError` when the name or the spec is invalid (or
    asks for what this operator does not allow: its own ServiceAccount)."""
    validate_workflow_name(str(body["metadata"]["name"]))
    spec = body.get("spec")
    parsed = parse_spec(dict(spec) if isinstance(spec, Mapping) else spec)
    if settings is not None and settings.service_account:
        own = settings.service_account
        for part, options in (
            ("manager", parsed.manager),
            ("workers", parsed.workers),
            ("application", parsed.application),
        ):
            if options is not None and options.service_account_name == own:
                raise SpecError([f"{part}.serviceAccountName: {own!r} is the operator's own ServiceAccount"])
    return parsed


def _context(memo: Any) -> scaler.Context:
    if not isinstance(memo, scaler.Context):
        raise kopf.PermanentError("the operator was started without its context (use kubevine operator)")
    return memo


def _event(body: kopf.Body, note: scaler.Note) -> None:
    message = (
        note.message if len(note.message) <= MAX_EVENT_MESSAGE else note.message[:MAX_EVENT_MESSAGE] + "…"
    )
    kopf.event(body, type=note.type, reason=note.reason, message=message)


async def ensure_children(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    indexes: Mapping[str, Any],
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Validate, then create (or bring up to date) the workflow's fixed children."""
    ctx = _context(memo)
    try:
        await _ensure_children(ctx, body, patch, children_of(body, indexes), logger=logger)
    except kopf.PermanentError:  # an invalid spec
        ctx.metrics.record_error("children", "invalid_spec")
        raise
    except kopf.TemporaryError:
        ctx.metrics.record_error("children", "kube_api")
        raise
    except Exception:
        ctx.metrics.record_error("children", "unexpected")
        raise


async def _ensure_children(
    ctx: scaler.Context,
    body: kopf.Body,
    patch: kopf.Patch,
    seen: Children,
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    previous = dict(body.get("status") or {})
    try:
        spec = validated_spec(body, ctx.settings)
    except SpecError as e:
        generation = int(body["metadata"].get("generation") or 0)
        status = compute_status(Observed(generation=generation, spec_error=str(e)), previous, time.time())
        patch.status.update(merge_patch(status, previous))
        _event(body, scaler.Note("Warning", "InvalidSpec", f"{e}; nothing was created"))
        raise kopf.PermanentError(str(e)) from e
    ref = WorkflowRef.from_body(body)
    if ctx.in_terminating_namespace(body):
        return
    try:
        notes = await scaler.repair(ctx, ref, spec, body, seen, time.time(), start_application=False)
    except KubeError as e:
        if e.namespace_terminating:
            ctx.namespace_terminating(ref.namespace, time.time())
            return
        raise kopf.TemporaryError(f"creating the children failed: {e}", delay=RETRY_DELAY) from e
    failed = ctx.of(ref.uid).repairs_problems
    if failed:
        raise kopf.TemporaryError(failed[0].message, delay=RETRY_DELAY)
    for note in notes:
        logger.info("%s: %s", note.reason, note.message)
        _event(body, note)


async def autoscale(body: kopf.Body, patch: kopf.Patch, memo: Any, indexes: Mapping[str, Any]) -> None:
    """One step; skipped for workflows being deleted or with an invalid spec."""
    ctx = _context(memo)
    if body["metadata"].get("deletionTimestamp"):
        ctx.forget(str(body["metadata"]["uid"]))
        return
    if ctx.in_terminating_namespace(body):
        return  # its namespace is going, with everything in it
    try:
        spec = validated_spec(body, ctx.settings)
    except SpecError:
        return  # the create/update handler reported it; nothing runs for it
    started = time.monotonic()
    try:
        result = await scaler.step(ctx, body, spec, children_of(body, indexes), time.time())
    except KubeError as e:
        if e.namespace_terminating:
            ctx.namespace_terminating(str(body["metadata"].get("namespace")), time.time())
            return
        ctx.metrics.record_error("autoscale", "kube_api")
        log.warning(
            "workflow %s/%s: autoscaler step failed, next in %gs: %s",
            body["metadata"].get("namespace"),
            body["metadata"].get("name"),
            ctx.settings.scale_interval_seconds,
            e,
        )
        return
    except Exception:
        ctx.metrics.record_error("autoscale", "unexpected")
        raise
    ctx.metrics.step_seconds.observe(time.monotonic() - started)
    _record(ctx, body, spec, result)
    for note in result.events:
        _event(body, note)
    if result.delete_workflow:
        try:
            await scaler.delete_workflow(ctx, body)
        except KubeError as e:
            ctx.metrics.record_error("expire", "kube_api")
            log.warning("workflow %s: deletion after its TTL failed: %s", body["metadata"].get("name"), e)
        return
    if result.status_patch:
        patch.status.update(result.status_patch)


def _record(ctx: scaler.Context, body: kopf.Body, spec: VineWorkflowSpec, result: scaler.StepResult) -> None:
    decision = result.decision
    finished = str(result.status.get("phase")) in ("Succeeded", "Failed")
    limits = pool_limits(spec, finished=finished)
    ctx.metrics.record_step(
        str(body["metadata"].get("namespace") or ""),
        str(body["metadata"]["name"]),
        decision=decision,
        status=result.status,
        pool_min=limits.min,
        pool_max=limits.max,
        actual=result.actual,
        pool_pods=result.pool_pods,
        tasks=result.stats.tasks.model_dump() if result.stats is not None else None,
        manager_reachable=result.stats is not None,
        created=len(result.created),
        drained=len(decision.drain) if decision is not None else 0,
        deleted=len(result.deleted),
        now=time.time(),
    )


def watched(ctx: scaler.Context, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A watch event of a workflow: note its phase, or forget it once it is deleted."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    if event_type == "DELETED":
        ctx.metrics.forget(namespace, name)
        ctx.forget(str(meta.get("uid") or ""))
        return
    ctx.metrics.record_phase(namespace, name, (body.get("status") or {}).get("phase"))


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register every handler of the operator on `registry`."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    for kind in watched_kinds(settings):
        group, version, plural = CHILD_KINDS[kind]
        kopf.index(
            *((group, version, plural) if group else (version, plural)),
            id=_index_id(kind),
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            registry=registry,
        )(_index_children)

    @kopf.on.create(*resource, id="children", registry=registry, backoff=RETRY_DELAY)
    async def on_create(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **kwargs: Any) -> None:
        await ensure_children(body, patch, memo, kwargs, logger=logger)

    @kopf.on.resume(*resource, id="children-resume", registry=registry, backoff=RETRY_DELAY)
    async def on_resume(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **kwargs: Any) -> None:
        if body["metadata"].get("deletionTimestamp"):
            return
        await ensure_children(body, patch, memo, kwargs, logger=logger)

    @kopf.on.update(*resource, id="children-update", field="spec", registry=registry, backoff=RETRY_DELAY)
    async def on_update(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **kwargs: Any) -> None:
        await ensure_children(body, patch, memo, kwargs, logger=logger)

    @kopf.on.event(*resource, id="metrics", registry=registry)
    def on_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
        watched(_context(memo), type, body)

    @kopf.timer(
        *resource,
        id="autoscale",
        interval=settings.scale_interval_seconds,
        backoff=settings.scale_interval_seconds,  # an unexpected error delays one step, not kopf's 60 s
        registry=registry,
    )
    async def on_timer(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        await autoscale(body, patch, memo, kwargs)


def _index_children(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """One child as the indexes keep it, under its workflow's (namespace, name)."""
    return index_entry(body)
