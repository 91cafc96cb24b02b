"""One autoscaler step of one VineWorkflow: observe, decide, act, report.

Exists as the I/O shell around the pure core (`autoscale.decide`, `status.compute_status`):
it gathers what those functions need from the cluster and the manager, carries out the
decision, and returns the status patch and the Events for the kopf timer to apply. It
keeps no state between steps that matters for correctness:

* **Worker pods are derived from labels**, listed afresh each step (never remembered), so
  an operator killed mid-scale and restarted — or a second replica taking over — counts
  the pods that exist and creates none twice;
* **the last scaling decision lives in the workflow's status** (`status.lastScaling`),
  which is what the stabilisation window is measured from;
* the only memory is a cache of workflow tokens (read again from the Secret when absent),
  whether the manager was reachable (to log a change once, not every step), and which
  pods this process drained: a drained worker leaves the manager's stats a moment before
  its pod's phase says it exited, and in that moment the pod would look like a new,
  unconnected one (counted as capacity, reported as a second scale-down). Such a pod is
  treated as on its way out until it exits or its grace period is over. Lost on restart,
  this hint only costs one confusing step; it never decides which pod exists.

Until the manager Deployment exists (the create handler makes it, possibly a moment after
the first step), a step only reports status: a worker started before the manager's
Service exists would have nothing to resolve and join.

The manager is asked directly (`kubevine.admin.Admin`, role admin) at the IP of its Ready
pod: that address is right both inside a cluster and under the test kubelet, never
reaches a manager that is still starting or already terminating, and needs no DNS.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq
from pydantic import ValidationError

from kubevine.admin import Admin, AdminError
from kubevine.operator.adapter import manager_stats
from kubevine.operator.autoscale import (
    ManagerStats,
    ScalingDecision,
    ScalingPolicy,
    WorkerPod,
    decide,
    pool_limits,
)
from kubevine.operator.kube import KubeApi, KubeError, Obj
from kubevine.operator.metrics import OperatorMetrics
from kubevine.operator.naming import (
    COMPONENT_MANAGER,
    COMPONENT_WORKER,
    KIND,
    WorkflowRef,
    application_job_name,
    label_selector,
    manager_name,
    redis_name,
    token_secret_name,
)
from kubevine.operator.podparts import TOKEN_KEY
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec
from kubevine.operator.status import (
    JobOutcome,
    Observed,
    compute_status,
    deployment_available,
    job_outcome,
    last_scaling,
    merge_patch,
    seconds_until_deletion,
    statefulset_ready,
)
from kubevine.operator.workerpod import build_worker_pod, worker_grace_period

log = logging.getLogger(__name__)

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
#: Seconds one call to the manager may take before the step goes on without its stats.
ADMIN_TIMEOUT = 3.0


@dataclass
class Context:
    """What every handler of one operator process shares (passed to kopf as `memo`)."""

    settings: OperatorSettings
    kube: KubeApi
    policy: ScalingPolicy
    tokens: dict[str, str] = field(default_factory=dict)  # workflow uid -> token
    reachable: dict[str, bool] = field(default_factory=dict)  # workflow uid -> last outcome
    retiring: dict[str, dict[str, float]] = field(default_factory=dict)  # workflow uid -> pod uid -> until
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)

    def forget(self, workflow_uid: str) -> None:
        """Drop what was remembered about a workflow (it is being deleted)."""
        self.tokens.pop(workflow_uid, None)
        self.reachable.pop(workflow_uid, None)
        self.retiring.pop(workflow_uid, None)


@dataclass(frozen=True)
class Note:
    """An Event to post on the workflow."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class StepResult:
    """What the kopf timer applies after a step."""

    status_patch: dict[str, Any]
    events: list[Note]
    decision: ScalingDecision | None  # None until the manager Deployment exists
    delete_workflow: bool = False
    status: dict[str, Any] = field(default_factory=dict)  # the whole status the patch leads to
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    actual: int = 0  # serving workers connected to the manager
    pool_pods: int = 0  # worker pods that exist (what max bounds)
    stats: ManagerStats | None = None


@dataclass(frozen=True)
class Observation:
    """The cluster and manager as one step saw them."""

    pods: list[WorkerPod]
    pod_uids: dict[str, str]
    manager: Obj | None
    manager_address: str | None
    state_store_ready: bool
    job: JobOutcome | None
    stats: ManagerStats | None


def worker_suffix() -> str:
    """Five random lowercase letters and digits, as a ReplicaSet's pods get."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


# --- observing -----------------------------------------------------------------------------


async def _token(ctx: Context, ref: WorkflowRef) -> str | None:
    token = ctx.tokens.get(ref.uid)
    if token is None:
        secret = await ctx.kube.get("Secret", ref.namespace, token_secret_name(ref))
        encoded = ((secret or {}).get("data") or {}).get(TOKEN_KEY)
        if not encoded:
            return None
        token = base64.b64decode(encoded).decode()
        ctx.tokens[ref.uid] = token
    return token


def _ask_status(address: str, token: str) -> ManagerStats:
    return manager_stats(Admin(address, token, timeout=ADMIN_TIMEOUT).status())


async def _stats(ctx: Context, ref: WorkflowRef, address: str | None) -> ManagerStats | None:
    if address is None:
        return None
    token = await _token(ctx, ref)
    if token is None:
        return None
    try:
        stats = await asyncio.to_thread(_ask_status, address, token)
    except (AdminError, zmq.ZMQError, ValidationError, ValueError) as e:
        if ctx.reachable.get(ref.uid, True):
            log.warning(
                "workflow %s/%s: no stats from the manager at %s: %s", ref.namespace, ref.name, address, e
            )
        ctx.reachable[ref.uid] = False
        if isinstance(e, AdminError) and "refused" in str(e):
            ctx.tokens.pop(ref.uid, None)  # the Secret may have been recreated: read it again
        return None
    if not ctx.reachable.get(ref.uid, True):
        log.info("workflow %s/%s: the manager at %s answers again", ref.namespace, ref.name, address)
    ctx.reachable[ref.uid] = True
    return stats


async def observe(ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec) -> Observation:
    """List and read everything one step needs (in parallel)."""
    kube = ctx.kube
    pods_call = kube.list("Pod", ref.namespace, label_selector(ref, COMPONENT_WORKER))
    manager_pods_call = kube.list("Pod", ref.namespace, label_selector(ref, COMPONENT_MANAGER))
    deployment_call = kube.get("Deployment", ref.namespace, manager_name(ref))
    redis_call = (
        kube.get("StatefulSet", ref.namespace, redis_name(ref)) if spec.state_store.managed else _none()
    )
    job_call = (
        kube.get("Job", ref.namespace, application_job_name(ref)) if spec.application is not None else _none()
    )
    pods, manager_pods, deployment, redis, job = await asyncio.gather(
        pods_call, manager_pods_call, deployment_call, redis_call, job_call
    )
    serving = [
        p
        for p in manager_pods
        if _ready(p) and not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("podIP")
    ]
    address = f"{serving[0]['status']['podIP']}:{spec.manager.port}" if serving else None
    return Observation(
        pods=[WorkerPod.from_k8s(p) for p in pods],
        pod_uids={p["metadata"]["name"]: p["metadata"]["uid"] for p in pods},
        manager=deployment,
        manager_address=address,
        state_store_ready=statefulset_ready(redis) if spec.state_store.managed else True,
        job=job_outcome(job) if spec.application is not None else None,
        stats=await _stats(ctx, ref, address),
    )


async def _none() -> None:
    return None


# --- acting --------------------------------------------------------------------------------


def _drain(address: str, token: str, worker_ids: list[str]) -> None:
    Admin(address, token, timeout=ADMIN_TIMEOUT).drain(worker_ids)


async def carry_out(
    ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec, seen: Observation, decision: ScalingDecision
) -> tuple[list[str], list[str]]:
    """Delete, then drain, then create. Returns (pods created, pods deleted)."""
    deleted = []
    for name in decision.delete:
        if await ctx.kube.delete("Pod", ref.namespace, name, uid=seen.pod_uids.get(name)):
            deleted.append(name)
    if decision.drain and seen.manager_address is not None:
        token = await _token(ctx, ref)
        if token is not None:
            try:
                await asyncio.to_thread(_drain, seen.manager_address, token, decision.drain)
            except (AdminError, zmq.ZMQError) as e:  # the next step sees them not draining and asks again
                log.warning(
                    "workflow %s/%s: drain of %s failed: %s", ref.namespace, ref.name, decision.drain, e
                )
    created = []
    for _ in range(decision.create):
        created.append(await _create_worker(ctx, ref, spec))
    return created, deleted


async def _create_worker(ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec) -> str:
    for attempt in range(3):
        pod = build_worker_pod(ref, spec, worker_suffix(), ctx.settings)
        try:
            await ctx.kube.create(pod)
        except KubeError as e:
            if e.status == 409 and attempt < 2:  # a name drawn twice: draw again
                continue
            raise
        return str(pod["metadata"]["name"])
    raise AssertionError("unreachable")


# --- one step ------------------------------------------------------------------------------


def _with_retiring(ctx: Context, ref: WorkflowRef, seen: Observation, now: float) -> Observation:
    """Pods this process drained and that have not exited yet count as leaving (see the
    module docstring); forget pods that are gone or past their grace period."""
    retiring = ctx.retiring.get(ref.uid, {})
    uids = set(seen.pod_uids.values())
    for uid, until in list(retiring.items()):
        if uid not in uids or until < now:
            del retiring[uid]
    if not retiring:
        return seen
    pods = [
        p.model_copy(update={"deleting": True})
        if seen.pod_uids.get(p.name) in retiring and not p.finished
        else p
        for p in seen.pods
    ]
    return dataclasses.replace(seen, pods=pods)


def _remember_drained(
    ctx: Context, ref: WorkflowRef, seen: Observation, decision: ScalingDecision, until: float
) -> None:
    pod_of = {w.id: w.pod for w in seen.stats.workers} if seen.stats is not None else {}
    for worker_id in decision.drain:
        uid = seen.pod_uids.get(pod_of.get(worker_id) or "")
        if uid is not None:
            ctx.retiring.setdefault(ref.uid, {})[uid] = until


def _after(pods: list[WorkerPod], created: list[str], deleted: list[str], now: float) -> list[WorkerPod]:
    """The pods as they are once the step's changes land (for a status that is not a step
    behind)."""
    gone = set(deleted)
    after = [p.model_copy(update={"deleting": True}) if p.name in gone else p for p in pods]
    return after + [WorkerPod(name=name, phase="Pending", created=now) for name in created]


def _events(
    previous: Mapping[str, Any], status: Mapping[str, Any], decision: ScalingDecision | None
) -> list[Note]:
    notes = []
    if decision is not None and decision.scaled:
        notes.append(Note("Normal", decision.event_reason, decision.reason))
    before = {c.get("type"): c.get("status") for c in previous.get("conditions") or []}
    after = {c["type"]: c for c in status.get("conditions") or []}
    manager = after.get("ManagerReady")
    if manager is not None and manager["status"] != before.get("ManagerReady"):
        kind: Literal["Normal", "Warning"] = "Normal" if manager["status"] == "True" else "Warning"
        if manager["status"] == "True" or before.get("ManagerReady") == "True":
            notes.append(Note(kind, manager["reason"], manager["message"]))
    phase, was = status.get("phase"), previous.get("phase")
    if phase != was and phase in ("Succeeded", "Failed"):
        kind = "Normal" if phase == "Succeeded" else "Warning"
        notes.append(Note(kind, f"Application{phase}", str(status.get("message", ""))))
    return notes


async def step(
    ctx: Context,
    body: Mapping[str, Any],
    spec: VineWorkflowSpec,
    now: float,
) -> StepResult:
    """Observe the workflow, decide, act; the status patch and Events to apply."""
    ref = WorkflowRef.from_body(body)
    previous: Mapping[str, Any] = body.get("status") or {}
    seen = await observe(ctx, ref, spec)
    seen = _with_retiring(ctx, ref, seen, now)
    finished = seen.job in ("Succeeded", "Failed")
    decision: ScalingDecision | None = None
    created: list[str] = []
    deleted: list[str] = []
    if seen.manager is not None:  # else the create handler has not made it yet: nothing to join
        decision = decide(
            pool_limits(spec, finished=finished),
            seen.stats,
            seen.pods,
            now,
            last_scaling(previous),
            ctx.policy,
        )
        created, deleted = await carry_out(ctx, ref, spec, seen, decision)
        _remember_drained(ctx, ref, seen, decision, until=now + worker_grace_period(spec))
    if decision is not None and (created or deleted or decision.drain):
        log.info(
            "workflow %s/%s: %s (created %s, drained %s, deleted %s)",
            ref.namespace,
            ref.name,
            decision.reason,
            created,
            decision.drain,
            deleted,
        )
    pods_after = _after(seen.pods, created, deleted, now)
    observed = Observed(
        generation=int(body["metadata"].get("generation") or 0),
        has_application=spec.application is not None,
        manager_available=deployment_available(seen.manager),
        state_store_ready=seen.state_store_ready,
        pods=pods_after,
        stats=seen.stats,
        decision=decision,
        job=seen.job,
    )
    status = compute_status(observed, previous, now)
    result = StepResult(
        status_patch=merge_patch(status, previous),
        events=_events(previous, status, decision),
        decision=decision,
        status=status,
        created=created,
        deleted=deleted,
        actual=_serving_connected(pods_after, seen.stats),
        pool_pods=sum(1 for p in pods_after if not p.finished),
        stats=seen.stats,
    )
    left = seconds_until_deletion(status, spec.ttl_seconds_after_finished, now)
    if left == 0:
        result.events.append(
            Note(
                "Normal",
                "Expired",
                f"deleting the workflow: finished more than ttlSecondsAfterFinished="
                f"{spec.ttl_seconds_after_finished}s ago",
            )
        )
        result.delete_workflow = True
    return result


def _serving_connected(pods: list[WorkerPod], stats: ManagerStats | None) -> int:
    """Worker pods whose worker is connected to the manager and not draining."""
    known = {w.pod: w for w in (stats.workers if stats else []) if w.pod}
    return sum(
        1
        for p in pods
        if not p.finished and not p.deleting and p.name in known and not known[p.name].draining
    )


async def delete_workflow(ctx: Context, body: Mapping[str, Any]) -> None:
    """Delete the VineWorkflow itself (its children follow by owner references)."""
    ref = WorkflowRef.from_body(body)
    await ctx.kube.delete(KIND, ref.namespace, ref.name, uid=ref.uid)
