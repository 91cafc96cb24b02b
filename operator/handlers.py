"""The kopf handlers of VineWorkflows: thin glue between kopf and the operator's parts.

Exists so that what kopf calls, and when, is visible on one page:

* create / resume / spec update → validate the spec; invalid: `Valid=False`, a Warning
  Event, nothing created, `kopf.PermanentError`; valid: ensure the fixed children
  (`kubevine.operator.children`).
* a timer every `scale_interval_seconds` → one autoscaler step
  (`kubevine.operator.scaler`): status, Events, worker pods, and deletion of a finished
  workflow after `ttlSecondsAfterFinished`.
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

from kubevine.operator import children, scaler
from kubevine.operator.autoscale import pool_limits
from kubevine.operator.kube import KubeError
from kubevine.operator.naming import GROUP, PLURAL, VERSION, WorkflowRef
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import SpecError, VineWorkflowSpec, parse_spec, validate_workflow_name
from kubevine.operator.status import Observed, compute_status, merge_patch

log = logging.getLogger(__name__)

#: Seconds before a handler that hit an API error runs again.
RETRY_DELAY = 5.0
#: Longest Event message the API server accepts is 1024 bytes; stay below it.
MAX_EVENT_MESSAGE = 1000


def validated_spec(body: Mapping[str, Any]) -> VineWorkflowSpec:
    """The workflow's spec as models; `SpecError` when the name or the spec is invalid."""
    validate_workflow_name(str(body["metadata"]["name"]))
    spec = body.get("spec")
    return parse_spec(dict(spec) if isinstance(spec, Mapping) else spec)


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
    *,
    update: bool,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Validate, then create (and on update, reconcile) the workflow's fixed children."""
    ctx = _context(memo)
    try:
        await _ensure_children(ctx, body, patch, update=update, logger=logger)
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
    *,
    update: bool,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    previous = dict(body.get("status") or {})
    try:
        spec = validated_spec(body)
    except SpecError as e:
        generation = int(body["metadata"].get("generation") or 0)
        status = compute_status(Observed(generation=generation, spec_error=str(e)), previous, time.time())
        patch.status.update(merge_patch(status, previous))
        _event(body, scaler.Note("Warning", "InvalidSpec", f"{e}; nothing was created"))
        raise kopf.PermanentError(str(e)) from e
    ref = WorkflowRef.from_body(body)
    try:
        changed = await children.ensure(ctx.kube, ref, spec, ctx.settings, body, update=update)
    except KubeError as e:
        raise kopf.TemporaryError(f"creating the children failed: {e}", delay=RETRY_DELAY) from e
    if changed:
        logger.info("created %s", ", ".join(changed))
        _event(body, scaler.Note("Normal", "Updated" if update else "Created", ", ".join(changed)))


async def autoscale(body: kopf.Body, patch: kopf.Patch, memo: Any) -> None:
    """One autoscaler step; skipped for workflows being deleted or with an invalid spec."""
    ctx = _context(memo)
    if body["metadata"].get("deletionTimestamp"):
        ctx.forget(str(body["metadata"]["uid"]))
        return
    try:
        spec = validated_spec(body)
    except SpecError:
        return  # the create/update handler reported it; nothing runs for it
    started = time.monotonic()
    try:
        result = await scaler.step(ctx, body, spec, time.time())
    except KubeError as e:
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

    @kopf.on.create(*resource, id="children", registry=registry, backoff=RETRY_DELAY)
    async def on_create(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **_: Any) -> None:
        await ensure_children(body, patch, memo, update=False, logger=logger)

    @kopf.on.resume(*resource, id="children-resume", registry=registry, backoff=RETRY_DELAY)
    async def on_resume(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **_: Any) -> None:
        if body["metadata"].get("deletionTimestamp"):
            return
        await ensure_children(body, patch, memo, update=False, logger=logger)

    @kopf.on.update(*resource, id="children-update", field="spec", registry=registry, backoff=RETRY_DELAY)
    async def on_update(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **_: Any) -> None:
        await ensure_children(body, patch, memo, update=True, logger=logger)

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
    async def on_timer(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        await autoscale(body, patch, memo)
