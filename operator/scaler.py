"""One step of one VineWorkflow: repair, observe, decide, act, report.

Exists as the I/O shell around the pure core (`autoscale.decide`, `status.compute_status`,
`problems`): it gathers what those functions need, carries out the decision, and returns
the status patch and the Events for the kopf timer to apply. What it reads of the cluster
comes from watches (`cache.Children`, kopf indexes), so a step of a workflow at rest makes
no API call at all — it talks to the manager, and writes the status only when it changed.

State between steps that matters for correctness lives in the cluster, not here:

* **Worker pods are derived from labels** (the watched pods), so an operator killed
  mid-scale and restarted — or a second replica taking over — counts the pods that exist
  and creates none twice;
* **the last scaling decision lives in the workflow's status** (`status.lastScaling`),
  which is what the stabilisation window is measured from; the problems reported so far
  are in `status.problems`, so an Event is posted once per problem, not once per process;
* the memory of this process (`Memory`, per workflow) is only what saves calls or noise:
  the token Secret's data (read once), whether the manager answered last time (a change is
  logged once), pods this process drained (a drained worker leaves the manager's stats a
  moment before its pod's phase says it exited), what it created or deleted that the watch
  has not shown yet (`cache.Expectations`), and the back-off after the API server refused a
  pod. Lost on restart, it costs one extra read or one confusing step.

Until the manager Deployment exists, a step only reports status: a worker started before the
manager's Service exists would have nothing to resolve and join. The application Job is
created once the manager is ready, or the workflow fails after `startTimeoutSeconds`.

The manager is asked directly (`kubevine.admin.Admin`, role admin, encrypted when the
workflow's `security.encrypt` says so) at the IP of its Ready pod: that address is right
both inside a cluster and under the test kubelet, never reaches a manager that is still
starting or already terminating, and needs no DNS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import zmq
from pydantic import ValidationError

from kubevine.admin import Admin, AdminError
from kubevine.operator import children as children_
from kubevine.operator import problems as problems_
from kubevine.operator.adapter import manager_stats
from kubevine.operator.autoscale import (
    Backoff,
    ManagerStats,
    ScalingDecision,
    ScalingPolicy,
    WorkerPod,
    decide,
    failed_pods_to_keep,
    pool_limits,
)
from kubevine.operator.cache import Children
from kubevine.operator.kube import KubeApi, KubeError, Obj
from kubevine.operator.metrics import OperatorMetrics
from kubevine.operator.naming import (
    COMPONENT_APPLICATION,
    COMPONENT_MANAGER,
    COMPONENT_REDIS,
    COMPONENT_WORKER,
    KIND,
    LABEL_COMPONENT,
    LABEL_WORKFLOW,
    WorkflowRef,
    application_job_name,
    manager_name,
    redis_name,
    token_secret_name,
)
from kubevine.operator.problems import Problem
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
#: Annotation on the manager's (and Redis's) pod template that rolls them when the token
#: Secret had to be recreated with new values.
ANNOTATION_SECRET = "kubevine.io/secret-recreated"


@dataclass
class Memory:
    """What this process remembers about one workflow between steps (see the module doc)."""

    secret_data: dict[str, str] | None = None
    reachable: bool = True
    retiring: dict[str, float] = field(default_factory=dict)  # pod uid -> until
    repairs: children_.Repairs = field(default_factory=children_.Repairs)
    create_failures: int = 0
    create_backoff: Backoff | None = None
    create_problem: Problem | None = None
    repairs_problems: list[Problem] = field(default_factory=list)


@dataclass
class Context:
    """What every handler of one operator process shares (passed to kopf as `memo`)."""

    settings: OperatorSettings
    kube: KubeApi
    policy: ScalingPolicy
    memory: dict[str, Memory] = field(default_factory=dict)  # workflow uid -> its memory
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    #: namespace -> when a create there was refused because the namespace is being deleted
    terminating: dict[str, float] = field(default_factory=dict)

    def of(self, workflow_uid: str) -> Memory:
        return self.memory.setdefault(workflow_uid, Memory())

    def forget(self, workflow_uid: str) -> None:
        """Drop what was remembered about a workflow (it is being deleted)."""
        self.memory.pop(workflow_uid, None)

    def namespace_terminating(self, namespace: str, now: float) -> None:
        """The API server said `namespace` is being deleted: its workflows, and everything
        they own, go with it, so nothing is repaired, created or reported there any more (each
        attempt would be one more 403)."""
        if namespace not in self.terminating:
            log.info("namespace %s is being deleted: its workflows are left alone", namespace)
            self.terminating[namespace] = now

    def in_terminating_namespace(self, body: Mapping[str, Any]) -> bool:
        """Whether the workflow lives in a namespace known to be going. A namespace of the same
        name made again later is a new one: a workflow created after the refusal is not in the
        old one (nothing can be created in a terminating namespace)."""
        meta = body.get("metadata") or {}
        seen = self.terminating.get(str(meta.get("namespace")))
        if seen is None:
            return False
        created = str(meta.get("creationTimestamp") or "")
        try:
            born = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return True
        return born <= seen


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


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the token -----------------------------------------------------------------------------


async def secret_data(ctx: Context, ref: WorkflowRef) -> dict[str, str] | None:
    """The token Secret's data, read once and remembered."""
    memory = ctx.of(ref.uid)
    if memory.secret_data is None:
        secret = await ctx.kube.get("Secret", ref.namespace, token_secret_name(ref))
        data = (secret or {}).get("data") or {}
        memory.secret_data = dict(data) if data else None
    return memory.secret_data


async def _token(ctx: Context, ref: WorkflowRef) -> str | None:
    return children_.token_of(await secret_data(ctx, ref))


# --- observing -----------------------------------------------------------------------------


def _ask_status(address: str, token: str, encrypt: bool) -> ManagerStats:
    return manager_stats(Admin(address, token, timeout=ADMIN_TIMEOUT, encrypt=encrypt).status())


async def _stats(
    ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec, address: str | None
) -> ManagerStats | None:
    if address is None:
        return None
    token = await _token(ctx, ref)
    if token is None:
        return None
    memory = ctx.of(ref.uid)
    try:
        stats = await asyncio.to_thread(_ask_status, address, token, spec.security.encrypt)
    except (AdminError, zmq.ZMQError, ValidationError, ValueError) as e:
        if memory.reachable:
            log.warning(
                "workflow %s/%s: no stats from the manager at %s: %s", ref.namespace, ref.name, address, e
            )
        memory.reachable = False
        if isinstance(e, AdminError) and "refused" in str(e):
            memory.secret_data = None  # the Secret may have been recreated: read it again
        return None
    if not memory.reachable:
        log.info("workflow %s/%s: the manager at %s answers again", ref.namespace, ref.name, address)
    memory.reachable = True
    return stats


async def observe(ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec, seen: Children) -> Observation:
    """What one step needs: the watched children, and the manager's stats."""
    pods = seen.pods(COMPONENT_WORKER)
    serving = [
        p
        for p in seen.pods(COMPONENT_MANAGER)
        if _ready(p) and not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("podIP")
    ]
    address = f"{serving[0]['status']['podIP']}:{spec.manager.port}" if serving else None
    redis = seen.get("StatefulSet", redis_name(ref))
    job = seen.get("Job", application_job_name(ref))
    return Observation(
        pods=[WorkerPod.from_k8s(p) for p in pods],
        pod_uids={p["metadata"]["name"]: p["metadata"].get("uid", "") for p in pods},
        manager=seen.get("Deployment", manager_name(ref)),
        manager_address=address,
        state_store_ready=statefulset_ready(redis) if spec.state_store.managed else True,
        job=job_outcome(job) if spec.application is not None else None,
        stats=await _stats(ctx, ref, spec, address),
    )


# --- acting --------------------------------------------------------------------------------


def _drain(address: str, token: str, worker_ids: list[str], encrypt: bool) -> None:
    Admin(address, token, timeout=ADMIN_TIMEOUT, encrypt=encrypt).drain(worker_ids)


async def carry_out(
    ctx: Context,
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    seen: Observation,
    decision: ScalingDecision,
    now: float,
) -> tuple[list[str], list[str]]:
    """Delete, then drain, then create. Returns (pods created, pods deleted)."""
    memory = ctx.of(ref.uid)
    deleted = []
    for name in decision.delete:
        if await ctx.kube.delete("Pod", ref.namespace, name, uid=seen.pod_uids.get(name) or None):
            deleted.append(name)
            memory.repairs.expectations.expect_deleted("Pod", name, now)
    if decision.drain and seen.manager_address is not None:
        token = await _token(ctx, ref)
        if token is not None:
            try:
                await asyncio.to_thread(
                    _drain, seen.manager_address, token, decision.drain, spec.security.encrypt
                )
            except (AdminError, zmq.ZMQError) as e:  # the next step sees them not draining and asks again
                log.warning(
                    "workflow %s/%s: drain of %s failed: %s", ref.namespace, ref.name, decision.drain, e
                )
    if decision.create:
        behind = await _not_yet_watched(ctx, ref, seen)
        if behind:  # counted from a view that lacks pods that exist: never create from it
            log.info(
                "workflow %s/%s: worker pods %s exist but the watch has not shown them yet: "
                "none created this step",
                ref.namespace,
                ref.name,
                behind,
            )
            return [], deleted
    created = []
    for _ in range(decision.create):
        try:
            created.append(await _create_worker(ctx, ref, spec, now))
        except KubeError as e:
            if e.status in (0, 409) or e.status >= 500 or e.namespace_terminating:
                raise
            _creation_refused(ctx, ref, e, now)
            break
    else:
        if decision.create:
            memory.create_failures, memory.create_backoff, memory.create_problem = 0, None, None
    return created, deleted


async def _not_yet_watched(ctx: Context, ref: WorkflowRef, seen: Observation) -> list[str]:
    """Worker pods the API server has and this step's view (the watch, plus what this process
    created since) lacks. Pods have random names, so a pod counted short is a pod made twice:
    before creating, the step asks the API server (one list, only on steps that would create).
    The view lags after kopf resumes a standby replica (peering) or restarts a watch: the
    first steps may run before the pods' new listing has been read."""
    live = await ctx.kube.list(
        "Pod", ref.namespace, f"{LABEL_COMPONENT}={COMPONENT_WORKER},{LABEL_WORKFLOW}={ref.name}"
    )
    known = {p.name for p in seen.pods}
    return sorted(
        str(o["metadata"]["name"])
        for o in live
        if o["metadata"]["name"] not in known and not o["metadata"].get("deletionTimestamp")
    )


def _creation_refused(ctx: Context, ref: WorkflowRef, error: KubeError, now: float) -> None:
    """The API server refused a worker pod (Pod Security, a quota, a webhook): back off, and
    say so — the refusal is the only evidence, there is no pod to look at."""
    memory = ctx.of(ref.uid)
    memory.create_failures += 1
    delay = ctx.policy.backoff(memory.create_failures)
    text = str(error).split(": ", 1)[-1]
    memory.create_backoff = Backoff(
        now + delay, f"the API server refused the last worker pod ({error.status})"
    )
    memory.create_problem = problems_.creation_problem(
        COMPONENT_WORKER, error.status, f"{text} (attempt {memory.create_failures}, next in {delay:.0f}s)"
    )
    log.warning(
        "workflow %s/%s: creating a worker pod failed (%d), next attempt in %.0fs: %s",
        ref.namespace,
        ref.name,
        error.status,
        delay,
        text,
    )


async def _create_worker(ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec, now: float) -> str:
    for attempt in range(3):
        pod = build_worker_pod(ref, spec, worker_suffix(), ctx.settings)
        try:
            made = await ctx.kube.create(pod)
        except KubeError as e:
            if e.status == 409 and attempt < 2:  # a name drawn twice: draw again
                continue
            raise
        ctx.of(ref.uid).repairs.expectations.expect_created(made if made.get("metadata") else pod, now)
        return str(pod["metadata"]["name"])
    raise AssertionError("unreachable")


# --- one step ------------------------------------------------------------------------------


def _with_retiring(ctx: Context, ref: WorkflowRef, seen: Observation, now: float) -> Observation:
    """Pods this process drained and that have not exited yet count as leaving (see the
    module docstring); forget pods that are gone or past their grace period."""
    retiring = ctx.of(ref.uid).retiring
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
        if uid:
            ctx.of(ref.uid).retiring[uid] = until


def _after(pods: list[WorkerPod], created: list[str], deleted: list[str], now: float) -> list[WorkerPod]:
    """The pods as they are once the step's changes land (for a status that is not a step
    behind)."""
    gone = set(deleted)
    known = {p.name for p in pods}
    after = [p.model_copy(update={"deleting": True}) if p.name in gone else p for p in pods]
    return after + [
        WorkerPod(name=name, phase="Pending", created=now) for name in created if name not in known
    ]


def _events(
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    decision: ScalingDecision | None,
    reported: list[Problem],
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
    for problem in problems_.new_problems(reported, problems_.previous_problems(previous)):
        notes.append(Note("Warning", problem.reason, problem.sentence()))
    healthy = after.get("Healthy")
    if healthy is not None and healthy["status"] == "True" and before.get("Healthy") == "False":
        notes.append(Note("Normal", "Recovered", "no problem left"))
    phase, was = status.get("phase"), previous.get("phase")
    if phase != was and phase in ("Succeeded", "Failed"):
        kind = "Normal" if phase == "Succeeded" else "Warning"
        notes.append(Note(kind, f"Application{phase}", str(status.get("message", ""))))
    return notes


def _gave_up(
    body: Mapping[str, Any],
    spec: VineWorkflowSpec,
    previous: Mapping[str, Any],
    manager_ready: bool,
    job: Obj | None,
    now: float,
) -> str | None:
    """Why the application will never start: the manager was not ready within its
    `startTimeoutSeconds` (once said, it stays said)."""
    app = spec.application
    if app is None or job is not None:
        return None
    for condition in previous.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("reason") == "ManagerNotReady":
            return str(condition.get("message") or "")
    if manager_ready:
        return None
    created = (body.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return None
    waited = now - datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    if waited < app.start_timeout_seconds:
        return None
    return (
        f"the manager was not ready within startTimeoutSeconds={app.start_timeout_seconds}: "
        "the application was not started"
    )


def _problems(
    ref: WorkflowRef, spec: VineWorkflowSpec, seen: Children, now: float, policy: ScalingPolicy
) -> list[Problem]:
    found: list[Problem] = []
    found += problems_.deployment_problems(seen.get("Deployment", manager_name(ref)), COMPONENT_MANAGER)
    for component in (COMPONENT_MANAGER, COMPONENT_REDIS, COMPONENT_APPLICATION):
        for pod in seen.pods(component):
            found += problems_.pod_problems(pod, component, now)
    workers = seen.pods(COMPONENT_WORKER)
    kept = {p.name for p in failed_pods_to_keep([WorkerPod.from_k8s(p) for p in workers], now, policy)}
    for pod in workers:
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed" and pod["metadata"]["name"] not in kept:
            continue  # a failure old enough to be deleted is no longer news
        found += problems_.pod_problems(pod, COMPONENT_WORKER, now)
    return found


async def step(
    ctx: Context,
    body: Mapping[str, Any],
    spec: VineWorkflowSpec,
    seen: Children,
    now: float,
) -> StepResult:
    """Repair the children, observe, decide, act; the status patch and Events to apply."""
    ref = WorkflowRef.from_body(body)
    memory = ctx.of(ref.uid)
    previous: Mapping[str, Any] = body.get("status") or {}
    seen = memory.repairs.expectations.apply(seen, now)
    manager = seen.get("Deployment", manager_name(ref))
    job = seen.get("Job", application_job_name(ref))
    manager_ready = deployment_available(manager)
    gave_up = _gave_up(body, spec, previous, manager_ready, job, now)
    finished = gave_up is not None or (
        spec.application is not None and job_outcome(job) in ("Succeeded", "Failed")
    )
    notes: list[Note] = []
    repaired = await repair(
        ctx, ref, spec, body, seen, now, start_application=manager_ready and not finished and job is None
    )
    notes += repaired
    for note in repaired:  # what the step made or mended is in the log, as the create handler's is
        log.info("workflow %s/%s: %s: %s", ref.namespace, ref.name, note.reason, note.message)
    seen = memory.repairs.expectations.apply(seen, now)

    observed_now = await observe(ctx, ref, spec, seen)
    observed_now = _with_retiring(ctx, ref, observed_now, now)
    decision, created, deleted = await _scale(ctx, ref, spec, observed_now, previous, finished, now)
    found = _problems(ref, spec, seen, now, ctx.policy) + memory.repairs_problems
    if memory.create_problem is not None and memory.create_backoff is not None:
        found.append(memory.create_problem)
    reported = problems_.merge(found)
    pods_after = _after(observed_now.pods, created, deleted, now)
    observed = Observed(
        generation=int(body["metadata"].get("generation") or 0),
        has_application=spec.application is not None,
        manager_available=manager_ready,
        state_store_ready=observed_now.state_store_ready,
        pods=pods_after,
        stats=observed_now.stats,
        decision=decision,
        job=observed_now.job,
        problems=reported,
        gave_up=gave_up,
    )
    status = compute_status(observed, previous, now)
    result = StepResult(
        status_patch=merge_patch(status, previous) if _changed(status, previous) else {},
        events=notes + _events(previous, status, decision, reported),
        decision=decision,
        status=status,
        created=created,
        deleted=deleted,
        actual=_serving_connected(pods_after, observed_now.stats),
        pool_pods=sum(1 for p in pods_after if not p.finished),
        stats=observed_now.stats,
    )
    if seconds_until_deletion(status, spec.ttl_seconds_after_finished, now) == 0:
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


async def _scale(
    ctx: Context,
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    observed_now: Observation,
    previous: Mapping[str, Any],
    finished: bool,
    now: float,
) -> tuple[ScalingDecision | None, list[str], list[str]]:
    """Decide the pool's size and carry it out: the decision, the pods created and deleted.
    No decision before the manager exists (there is nothing for workers to join)."""
    if observed_now.manager is None:
        return None, [], []
    memory = ctx.of(ref.uid)
    backoff = memory.create_backoff if memory.create_backoff and memory.create_backoff.until > now else None
    decision = decide(
        pool_limits(spec, finished=finished),
        observed_now.stats,
        observed_now.pods,
        now,
        last_scaling(previous),
        ctx.policy,
        backoff,
    )
    created, deleted = await carry_out(ctx, ref, spec, observed_now, decision, now)
    _remember_drained(ctx, ref, observed_now, decision, until=now + worker_grace_period(spec))
    if created or deleted or decision.drain:
        log.info(
            "workflow %s/%s: %s (created %s, drained %s, deleted %s)",
            ref.namespace,
            ref.name,
            decision.reason,
            created,
            decision.drain,
            deleted,
        )
    return decision, created, deleted


async def repair(
    ctx: Context,
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    body: Mapping[str, Any],
    seen: Children,
    now: float,
    *,
    start_application: bool,
) -> list[Note]:
    """Bring the fixed children back to what the spec asks for (`children.ensure`); the
    Events that say what was done."""
    memory = ctx.of(ref.uid)
    data = memory.secret_data
    outcome = await children_.ensure(
        ctx.kube,
        ref,
        spec,
        ctx.settings,
        body,
        seen,
        memory.repairs,
        now,
        start_application=start_application,
        secret_data=data,
    )
    memory.repairs_problems = outcome.problems
    notes = []
    if outcome.created:
        notes.append(Note("Normal", "Created", ", ".join(outcome.created)))
    if outcome.patched:
        notes.append(Note("Normal", "Updated", ", ".join(outcome.patched)))
    if outcome.recreated:
        notes.append(
            Note("Warning", "Recreated", ", ".join(outcome.recreated) + " had been deleted: recreated")
        )
    if outcome.rotated:
        memory.secret_data = None
        await _restart_secret_users(ctx, ref, spec, now)
    return notes


async def _restart_secret_users(ctx: Context, ref: WorkflowRef, spec: VineWorkflowSpec, now: float) -> None:
    """The token Secret came back with new values: restart the manager (and Redis), which
    read them at start."""
    patch = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION_SECRET: _rfc3339(now)}}}}}
    await ctx.kube.merge_patch("Deployment", ref.namespace, manager_name(ref), patch)
    if spec.state_store.managed:
        await ctx.kube.merge_patch("StatefulSet", ref.namespace, redis_name(ref), patch)


def _changed(status: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether writing `status` would change anything (kopf's own bookkeeping aside)."""
    return dict(status) != {k: v for k, v in previous.items() if k != "kopf"}


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
