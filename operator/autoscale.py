"""The autoscaler's decision, as a pure function of what the operator observed.

Exists so that the rules that decide how many workers run — the part of the operator
most likely to be subtly wrong — can be tested exhaustively without a cluster, a
manager or a clock. A kopf timer gathers the inputs (the manager's published stats, the
worker pods, the last scaling record from the VineWorkflow's status), calls `decide`,
and carries out the returned `ScalingDecision`: create N pods, ask the manager to drain
these workers, delete these pods.

The rules:

* desired = ceil(demand / per-worker capacity), per resource (cores, memory, disk,
  gpus), where demand is what the waiting and running tasks ask for; at least one
  worker while any task exists; clamped to [workers.min, workers.max].
* Pending pods count as capacity (a pod on its way is not created twice); workers being
  drained do not. Pods that exist, draining or not, count against `max`: the pool never
  has more than `max` pods — except a pod evicted from a node that stopped answering, which
  runs nothing any more and may stay Terminating until that node returns.
* Scale up at once, at most `max_create_per_step` pods per step.
* Scale down only workers idle for at least `idleTimeoutSeconds`, never one that runs a
  task or holds the only replica of a temp file still needed, never below `min`, and
  never within `stabilization_seconds` of a scale-up (so a burst that ends does not
  flap the pool). Pods whose worker never connected are removed first (nothing to lose).
* Without fresh stats the autoscaler only tops the pool up to `min`; it never removes a
  worker it cannot see is idle.
* A failed worker pod is evidence: it is kept (the newest `failed_pods_kept`, each for
  `failed_pod_retention_seconds`) so that `kubectl describe` and `kubectl logs` still find
  it, and each one kept doubles the wait before the next pod is created (from
  `backoff_seconds` up to `backoff_max_seconds`), so a crashing image or a refusing manager
  is not hammered. Pods that ended well (drained workers) are deleted at once.

For a workflow whose application has finished, `pool_limits(spec, finished=True)` gives
[0, 0]: idle workers then leave at once, busy ones when they become idle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec, WorkersSpec


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskLoad(_Model):
    """A number of tasks and the resources they ask for together (memory, disk in MB)."""

    tasks: int = Field(default=0, ge=0)
    cores: float = Field(default=0.0, ge=0)
    memory: int = Field(default=0, ge=0)
    disk: int = Field(default=0, ge=0)
    gpus: int = Field(default=0, ge=0)


class TaskSize(_Model):
    """Per resource, the most any single task asks for."""

    cores: float = Field(default=0.0, ge=0)
    memory: int = Field(default=0, ge=0)
    disk: int = Field(default=0, ge=0)
    gpus: int = Field(default=0, ge=0)


class Demand(_Model):
    """What the manager's tasks ask for, as the scheduler will allocate it.

    A task that declares no resources counts as whatever the manager will give it
    (in TaskVine, a whole worker), so the totals must be the allocation, not the
    declaration.
    """

    waiting: TaskLoad = Field(default_factory=TaskLoad)
    running: TaskLoad = Field(default_factory=TaskLoad)
    largest_waiting: TaskSize = Field(default_factory=TaskSize)


class WorkerLoad(_Model):
    """One worker connected to the manager, as the manager sees it."""

    id: str = Field(min_length=1)
    pod: str | None = Field(default=None, description="pod name (KUBEVINE_* env of the pod)")
    node: str | None = None
    running_tasks: int = Field(ge=0)
    idle_since: float | None = Field(
        default=None,
        description="unix time since which it has run no task; None when busy",
    )
    draining: bool = False
    holds_unique_temps: bool = Field(
        default=False,
        description="it holds the only replica of a temp file that a task still needs",
    )


class TaskCounts(_Model):
    """Tasks by state, for the VineWorkflow's status."""

    waiting: int = Field(default=0, ge=0)
    running: int = Field(default=0, ge=0)
    done: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)


class ManagerStats(_Model):
    """What the operator needs from the manager's published stats."""

    time: float = Field(description="unix time at which the manager published these")
    demand: Demand = Field(default_factory=Demand)
    workers: list[WorkerLoad] = Field(default_factory=list)
    tasks: TaskCounts = Field(default_factory=TaskCounts)


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


class WorkerPod(_Model):
    """A worker pod as the operator observed it."""

    name: str
    phase: PodPhase = "Pending"
    created: float = Field(description="unix time of creationTimestamp")
    deleting: bool = Field(default=False, description="deletionTimestamp is set")
    node: str | None = None
    finished_at: float | None = Field(default=None, description="unix time its container ended")
    failure: str | None = Field(default=None, description="why it failed (reason, exit code)")
    lost: bool = Field(
        default=False,
        description="evicted from a node that stopped answering (DisruptionTarget, by the taint "
        "manager): it runs nothing, and may stay Terminating until the node returns",
    )

    @property
    def finished(self) -> bool:
        """Its worker has exited (drained, crashed or killed)."""
        return self.phase in ("Succeeded", "Failed")

    @classmethod
    def from_k8s(cls, pod: Mapping[str, Any]) -> WorkerPod:
        """From a core/v1 Pod object (as a dict)."""
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        created = meta.get("creationTimestamp")
        phase = status.get("phase") or "Pending"
        finished_at, failure = None, None
        for container in status.get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated")
            if ended:
                finished_at = _unix(ended["finishedAt"]) if ended.get("finishedAt") else None
                failure = f"{ended.get('reason') or 'Error'} (exit code {ended.get('exitCode')})"
        if phase == "Failed" and failure is None:
            failure = str(status.get("reason") or "Failed")
        lost = any(
            c.get("type") == "DisruptionTarget"
            and c.get("status") == "True"
            and c.get("reason") == "DeletionByTaintManager"
            for c in status.get("conditions") or []
        )
        return cls(
            name=meta["name"],
            phase=phase,
            created=_unix(created) if created else 0.0,
            deleting=bool(meta.get("deletionTimestamp")),
            node=(pod.get("spec") or {}).get("nodeName"),
            finished_at=finished_at,
            failure=failure if phase == "Failed" else None,
            lost=lost and bool(meta.get("deletionTimestamp")),
        )


def _unix(timestamp: str | datetime) -> float:
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    return datetime.fromisoformat(timestamp).timestamp()


class LastScaling(_Model):
    """The last decision that changed the pool; kept in `status.lastScaling`."""

    time: float
    from_count: int = Field(ge=0)
    to_count: int = Field(ge=0)
    reason: str = ""

    @property
    def was_scale_up(self) -> bool:
        """The decision added workers."""
        return self.to_count > self.from_count

    def to_status(self) -> dict[str, Any]:
        """The `status.lastScaling` object (RFC 3339 time, `from`/`to`)."""
        return {
            "time": datetime.fromtimestamp(self.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "from": self.from_count,
            "to": self.to_count,
            "reason": self.reason,
        }

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> LastScaling | None:
        """Read back `status.lastScaling`; None when absent or unreadable."""
        if not status or "time" not in status:
            return None
        try:
            return cls(
                time=_unix(status["time"]),
                from_count=int(status.get("from", 0)),
                to_count=int(status.get("to", 0)),
                reason=str(status.get("reason", "")),
            )
        except (TypeError, ValueError):
            return None


class ScalingPolicy(_Model):
    """The autoscaler's pace (operator-wide; see `OperatorSettings`)."""

    max_create_per_step: int = Field(default=10, ge=1)
    max_drain_per_step: int = Field(default=10, ge=1)
    stabilization_seconds: float = Field(default=60.0, ge=0)
    stats_max_age_seconds: float = Field(default=30.0, gt=0)
    failed_pod_retention_seconds: float = Field(default=600.0, ge=0)
    failed_pods_kept: int = Field(default=5, ge=0)
    backoff_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> ScalingPolicy:
        """The policy an operator configured through its settings."""
        return cls(
            max_create_per_step=settings.max_create_per_step,
            max_drain_per_step=settings.max_drain_per_step,
            stabilization_seconds=settings.stabilization_seconds,
            stats_max_age_seconds=settings.stats_max_age_seconds,
            failed_pod_retention_seconds=settings.failed_pod_retention_seconds,
            failed_pods_kept=settings.failed_pods_kept,
            backoff_seconds=settings.backoff_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
        )

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.backoff_max_seconds, self.backoff_seconds * 2 ** min(failures - 1, 30)))


#: Why the decision is what it is, as one bounded word (a safe Prometheus label; the full
#: sentence is `reason`): what set `desired` (`demand` of the tasks, raised to `min`, capped
#: at `max`, `no_tasks`, `no_stats`), what holds or forces a scale-down (`stabilization`,
#: `not_removable`, `over_max`), or what holds a scale-up (`backoff` after failures).
DecisionCause = Literal[
    "demand", "min", "max", "no_tasks", "no_stats", "stabilization", "not_removable", "over_max", "backoff"
]
#: What a step does to the pool, as one word (`hold`: it wants a change it may not make yet).
DecisionAction = Literal["scale_up", "scale_down", "steady", "hold"]


class ScalingDecision(_Model):
    """What to do now. Carry out `delete`, then `drain`, then `create`."""

    desired: int = Field(ge=0, description="workers wanted, within [min, max]")
    create: int = Field(ge=0, description="worker pods to create now")
    drain: list[str] = Field(description="worker ids the manager must drain")
    delete: list[str] = Field(description="pod names to delete now")
    reason: str
    current: int = Field(ge=0, description="serving workers before this step")
    target: int = Field(ge=0, description="serving workers once this step is carried out")
    cause: DecisionCause = Field(default="demand", description="why, in one word (see DecisionCause)")

    @property
    def action(self) -> DecisionAction:
        """Scale up, scale down, steady (nothing wanted), or hold (a change wanted, not made)."""
        if self.target > self.current:
            return "scale_up"
        if self.target < self.current:
            return "scale_down"
        return "steady" if self.desired == self.current else "hold"

    @property
    def scaled(self) -> bool:
        """The step changes the number of serving workers."""
        return self.target != self.current

    @property
    def event_reason(self) -> str:
        """The Kubernetes Event reason for this decision."""
        if self.target > self.current:
            return "ScaledUp"
        if self.target < self.current:
            return "ScaledDown"
        return "Steady"

    def record(self, now: float) -> LastScaling | None:
        """The `status.lastScaling` entry for this step, or None when nothing changed."""
        if not self.scaled:
            return None
        return LastScaling(time=now, from_count=self.current, to_count=self.target, reason=self.reason)


def pool_limits(spec: VineWorkflowSpec, *, finished: bool) -> WorkersSpec:
    """The worker pool to scale: the spec's, or [0, 0] once the application has ended."""
    if finished:
        return spec.workers.model_copy(update={"min": 0, "max": 0})
    return spec.workers


def workers_needed(workers: WorkersSpec, demand: Demand) -> tuple[int, str]:
    """Workers needed for `demand` (before clamping), and the arithmetic behind it."""
    total = TaskLoad(
        tasks=demand.waiting.tasks + demand.running.tasks,
        cores=demand.waiting.cores + demand.running.cores,
        memory=demand.waiting.memory + demand.running.memory,
        disk=demand.waiting.disk + demand.running.disk,
        gpus=demand.waiting.gpus + demand.running.gpus,
    )
    if total.tasks == 0:
        return 0, "no tasks"
    per_resource = {
        "cores": (total.cores, float(workers.cores)),
        "MB memory": (float(total.memory), float(workers.memory)),
        "MB disk": (float(total.disk), float(workers.disk)),
        "gpus": (float(total.gpus), float(workers.gpus)),
    }
    needed = 1
    binding = "1 per task set"
    for unit, (asked, per_worker) in per_resource.items():
        if asked <= 0 or per_worker <= 0:
            continue
        count = math.ceil(asked / per_worker - 1e-9)
        if count > needed:
            needed = count
            binding = f"{asked:g} {unit} / {per_worker:g} per worker"
    text = (
        f"{demand.waiting.tasks} waiting + {demand.running.tasks} running tasks "
        f"need {needed} worker(s) ({binding})"
    )
    return needed, text + _misfit(workers, demand)


def _misfit(workers: WorkersSpec, demand: Demand) -> str:
    """A note when some waiting task can never fit one worker, whatever the count."""
    largest = demand.largest_waiting
    problems = []
    if largest.cores > workers.cores:
        problems.append(f"{largest.cores:g} cores > {workers.cores}")
    if largest.memory > workers.memory:
        problems.append(f"{largest.memory} MB memory > {workers.memory}")
    if workers.disk and largest.disk > workers.disk:
        problems.append(f"{largest.disk} MB disk > {workers.disk}")
    if largest.gpus > workers.gpus:
        problems.append(f"{largest.gpus} gpus > {workers.gpus}")
    if not problems:
        return ""
    return "; a waiting task cannot fit any worker (" + ", ".join(problems) + ")"


@dataclass(frozen=True)
class Backoff:
    """No worker pod is created before `until` (unix time), for `reason`."""

    until: float
    reason: str


def failed_pods_to_keep(pods: Sequence[WorkerPod], now: float, policy: ScalingPolicy) -> list[WorkerPod]:
    """The failed pods kept as evidence: the newest `failed_pods_kept`, each for
    `failed_pod_retention_seconds` after it ended."""
    failed = sorted(
        (p for p in pods if p.phase == "Failed" and not p.deleting),
        key=lambda p: (-(p.finished_at or p.created), p.name),
    )
    return [
        p
        for p in failed[: policy.failed_pods_kept]
        if now - (p.finished_at or p.created) < policy.failed_pod_retention_seconds
    ]


def crash_backoff(pods: Sequence[WorkerPod], now: float, policy: ScalingPolicy) -> Backoff | None:
    """The wait the failed pods kept impose before the next creation, if it is not over."""
    kept = failed_pods_to_keep(pods, now, policy)
    if not kept:
        return None
    latest = kept[0]
    until = (latest.finished_at or latest.created) + policy.backoff(len(kept))
    if until <= now:
        return None
    return Backoff(
        until, f"{len(kept)} worker pod(s) failed recently, the last {latest.name}: {latest.failure}"
    )


def decide(
    workers: WorkersSpec,
    stats: ManagerStats | None,
    pods: Sequence[WorkerPod],
    now: float,
    last_decision: LastScaling | None,
    policy: ScalingPolicy | None = None,
    backoff: Backoff | None = None,
) -> ScalingDecision:
    """Decide this step of the autoscaler. Pure: same inputs, same decision.

    `backoff` is a wait the caller knows of (the API server refused the last pods it asked
    for); failed pods impose their own (`crash_backoff`). Either holds creations, never
    scale-downs.
    """
    policy = policy or ScalingPolicy()
    fresh = stats if stats is not None and now - stats.time <= policy.stats_max_age_seconds else None
    pool = _Pool.of(pods, fresh, now, policy, backoff)
    current = len(pool.serving)

    if fresh is None:
        age = "none published" if stats is None else f"{now - stats.time:.0f}s old"
        desired = min(max(current, workers.min), workers.max)
        reason_base = f"manager stats unavailable ({age}); keeping {desired}"
        cause: DecisionCause = "no_stats"
    else:
        needed, why = workers_needed(workers, fresh.demand)
        desired = min(max(needed, workers.min), workers.max)
        reason_base = why + _clamp_note(needed, desired, workers)
        cause = _cause(needed, desired)

    def hold(reason: str, why: DecisionCause) -> ScalingDecision:
        return ScalingDecision(
            desired=desired,
            create=0,
            drain=[],
            delete=pool.delete,
            reason=reason,
            current=current,
            target=current,
            cause=why,
        )

    if desired > current and pool.wait is not None:
        wait = pool.wait
        return hold(
            f"holding {current} (want {desired}): backing off {wait.until - now:.0f}s more, "
            f"{wait.reason}; " + reason_base,
            "backoff",
        )
    if desired > current:
        room = workers.max - len(pool.existing)
        create = max(0, min(desired - current, policy.max_create_per_step, room))
        reason = f"scale up {current}→{current + create}: {reason_base}"
        if create < desired - current:
            reason += _create_limit_note(desired - current, create, room, policy)
        return ScalingDecision(
            desired=desired,
            create=create,
            drain=[],
            delete=pool.delete,
            reason=reason,
            current=current,
            target=current + create,
            cause=cause,
        )
    if desired < current and fresh is not None:
        return _scale_down(
            workers,
            pool.serving,
            fresh.workers,
            now,
            last_decision,
            policy,
            desired,
            pool.delete,
            reason_base,
            cause,
        )
    return hold(f"steady at {current}: {reason_base}", cause)


@dataclass
class _Pool:
    """The worker pods as one step sees them: which to delete now, which count against max,
    which serve (neither leaving nor drained), and the longest wait holding creations."""

    delete: list[str]
    existing: list[WorkerPod]
    serving: list[WorkerPod]
    wait: Backoff | None

    @classmethod
    def of(
        cls,
        pods: Sequence[WorkerPod],
        fresh: ManagerStats | None,
        now: float,
        policy: ScalingPolicy,
        backoff: Backoff | None,
    ) -> _Pool:
        kept = {p.name for p in failed_pods_to_keep(pods, now, policy)}
        delete = [p.name for p in pods if p.finished and not p.deleting and p.name not in kept]
        waits = [b for b in (backoff, crash_backoff(pods, now, policy)) if b is not None and b.until > now]
        # Count against max, deleting or not — but not a pod lost with its node: it runs
        # nothing, and would hold its place until the node comes back.
        existing = [p for p in pods if not p.finished and not p.lost]
        live = [p for p in existing if not p.deleting]
        by_pod = {w.pod: w for w in fresh.workers if w.pod} if fresh is not None else {}
        retiring = [p for p in live if p.name in by_pod and by_pod[p.name].draining]
        for pod in retiring:
            worker = by_pod[pod.name]
            if worker.running_tasks == 0 and not worker.holds_unique_temps:
                delete.append(pod.name)  # drained: its pod may go
        serving = [p for p in live if p not in retiring]
        wait = max(waits, key=lambda b: b.until) if waits else None
        return cls(delete, existing, serving, wait)


def _cause(needed: int, desired: int) -> DecisionCause:
    if needed > desired:
        return "max"
    if needed < desired:
        return "min"
    return "no_tasks" if needed == 0 else "demand"


def _clamp_note(needed: int, desired: int, workers: WorkersSpec) -> str:
    if needed > desired:
        return f", capped at max {workers.max}"
    if needed < desired:
        return f", raised to min {workers.min}"
    return ""


def _create_limit_note(wanted: int, create: int, room: int, policy: ScalingPolicy) -> str:
    if room <= create:
        return f" (waiting for {wanted - create} draining pod(s) to leave before exceeding max)"
    return f" (at most {policy.max_create_per_step} per step)"


def _scale_down(
    workers: WorkersSpec,
    serving: list[WorkerPod],
    stats_workers: list[WorkerLoad],
    now: float,
    last: LastScaling | None,
    policy: ScalingPolicy,
    desired: int,
    delete: list[str],
    reason_base: str,
    cause: DecisionCause,
) -> ScalingDecision:
    by_pod = {w.pod: w for w in stats_workers if w.pod}
    current = len(serving)
    over_max = current > workers.max
    hold = ScalingDecision(
        desired=desired,
        create=0,
        drain=[],
        delete=delete,
        reason="",
        current=current,
        target=current,
        cause=cause,
    )
    if last is not None and last.was_scale_up and not over_max:
        since = now - last.time
        if since < policy.stabilization_seconds:
            return hold.model_copy(
                update={
                    "cause": "stabilization",
                    "reason": f"holding {current} (want {desired}): last scale-up {since:.0f}s "
                    f"ago, within the {policy.stabilization_seconds:g}s stabilisation window; " + reason_base,
                }
            )
    timeout = 0.0 if over_max else float(workers.idle_timeout_seconds)

    # Pods whose worker never connected: nothing to drain, nothing to lose. A Running pod
    # counts as unconnected only when every connected worker names its pod, so a worker
    # that failed to report its pod name is never mistaken for an empty pod.
    trust_running = all(w.pod for w in stats_workers)
    unconnected = sorted(
        (
            p
            for p in serving
            if p.name not in by_pod and (p.phase == "Pending" or trust_running) and now - p.created >= timeout
        ),
        key=lambda p: (-p.created, p.name),
    )
    idle = sorted(
        (by_pod[p.name] for p in serving if p.name in by_pod and _removable(by_pod[p.name], now, timeout)),
        key=lambda w: (w.idle_since or now, w.id),
    )
    budget = min(current - desired, policy.max_drain_per_step)
    remove_pods = [p.name for p in unconnected[:budget]]
    drain = [w.id for w in idle[: budget - len(remove_pods)]]
    removed = len(remove_pods) + len(drain)
    if removed == 0:
        busy = sum(1 for p in serving if p.name in by_pod and by_pod[p.name].running_tasks)
        return hold.model_copy(
            update={
                "cause": "not_removable",
                "reason": f"holding {current} (want {desired}): no worker is removable yet "
                f"({busy} busy, the others idle < {workers.idle_timeout_seconds}s, "
                f"holding unique temp files, or not yet connected); " + reason_base,
            }
        )
    return ScalingDecision(
        desired=desired,
        create=0,
        drain=drain,
        delete=delete + remove_pods,
        reason=f"scale down {current}→{current - removed}: "
        + (f"over max {workers.max}; " if over_max else f"idle ≥ {timeout:g}s; ")
        + reason_base,
        current=current,
        target=current - removed,
        cause="over_max" if over_max else cause,
    )


def _removable(worker: WorkerLoad, now: float, timeout: float) -> bool:
    """Idle long enough, runs nothing, holds no only-copy of a needed temp file."""
    return (
        worker.running_tasks == 0
        and not worker.draining
        and not worker.holds_unique_temps
        and worker.idle_since is not None
        and now - worker.idle_since >= timeout
    )
