"""The VineWorkflow's status, computed from what the operator observed.

Exists so that what `kubectl get vw` and `kubectl describe vw` tell a platform engineer —
phase, conditions, worker and task counts, the last scaling decision — is a pure
function of observations, tested without a cluster. A kopf handler gathers the
observations (the manager Deployment, the Redis StatefulSet, the worker pods, the
application Job, the manager's stats, the autoscaler's decision), calls
`compute_status`, and patches the result into `status`.

Conditions follow the Kubernetes convention: `lastTransitionTime` changes only when a
condition's status changes, so a status rewritten every few seconds does not look like
constant churn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kubevine.operator.autoscale import (
    LastScaling,
    ManagerStats,
    ScalingDecision,
    WorkerPod,
)
from kubevine.operator.problems import MAX_PROBLEMS, Problem

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Invalid"]
JobOutcome = Literal["Running", "Succeeded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]

CONDITION_TYPES = (
    "Valid",
    "ManagerReady",
    "WorkersReady",
    "Scaling",
    "Healthy",
    "Succeeded",
    "Failed",
)


class Observed(BaseModel):
    """Everything the status is computed from, gathered by the handler."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    generation: int = Field(ge=0, description="metadata.generation of the VineWorkflow")
    spec_error: str | None = Field(default=None, description="SpecError message, if invalid")
    has_application: bool = False
    manager_available: bool = False
    state_store_ready: bool = Field(
        default=True,
        description="the managed Redis is ready (always True for an external one)",
    )
    pods: list[WorkerPod] = Field(default_factory=list)
    stats: ManagerStats | None = None
    decision: ScalingDecision | None = None
    job: JobOutcome | None = Field(default=None, description="the application Job's outcome")
    problems: list[Problem] = Field(default_factory=list, description="what is wrong (see problems.py)")
    gave_up: str | None = Field(
        default=None,
        description="why the application was never started (the manager was not ready in time)",
    )


def rfc3339(moment: float | datetime) -> str:
    """`2026-01-02T03:04:05Z`, the form Kubernetes uses for times."""
    if isinstance(moment, datetime):
        moment = moment.timestamp()
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- reading child objects ---------------------------------------------------------------


def _condition_true(obj: Mapping[str, Any] | None, kind: str) -> bool:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return True
    return False


def deployment_available(deployment: Mapping[str, Any] | None) -> bool:
    """The Deployment has an available replica."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0) >= 1 or _condition_true(deployment, "Available")


def statefulset_ready(statefulset: Mapping[str, Any] | None) -> bool:
    """The StatefulSet has a ready replica."""
    if statefulset is None:
        return False
    return int((statefulset.get("status") or {}).get("readyReplicas") or 0) >= 1


def job_outcome(job: Mapping[str, Any] | None) -> JobOutcome | None:
    """Succeeded, Failed or Running; None when there is no Job."""
    if job is None:
        return None
    if _condition_true(job, "Complete"):
        return "Succeeded"
    if _condition_true(job, "Failed"):
        return "Failed"
    status = job.get("status") or {}
    if int(status.get("succeeded") or 0) >= 1:
        return "Succeeded"
    backoff = int((job.get("spec") or {}).get("backoffLimit", 6))
    if int(status.get("failed") or 0) > backoff:
        return "Failed"
    return "Running"


# --- counting ----------------------------------------------------------------------------


def worker_counts(pods: Sequence[WorkerPod], stats: ManagerStats | None, desired: int) -> dict[str, int]:
    """`status.workers`: desired, pending (pods not yet serving), connected, draining."""
    live = {p.name for p in pods if not p.finished and not p.deleting}
    known = {w.pod: w for w in (stats.workers if stats else []) if w.pod}
    connected = sum(1 for name in live if name in known)
    draining = sum(1 for name in live if name in known and known[name].draining)
    draining += sum(1 for p in pods if p.deleting and not p.finished)
    return {
        "desired": desired,
        "pending": len(live) - connected,
        "connected": connected,
        "draining": draining,
    }


# --- conditions --------------------------------------------------------------------------


def _condition(
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    before = previous.get(kind)
    since = now
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        since = str(before["lastTransitionTime"])
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def _previous_conditions(
    previous: Mapping[str, Any] | None,
) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (previous or {}).get("conditions") or [] if isinstance(c, Mapping)}


def compute_status(observed: Observed, previous: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """The whole `status` to patch, given the observations and the current status."""
    stamp = rfc3339(now)
    before = _previous_conditions(previous)
    gen = observed.generation

    def cond(kind: str, status: ConditionStatus, reason: str, message: str) -> dict[str, Any]:
        return _condition(kind, status, reason, message, gen, before, stamp)

    if observed.spec_error is not None:
        return {
            "phase": "Invalid",
            "message": observed.spec_error,
            "observedGeneration": gen,
            "conditions": [cond("Valid", "False", "InvalidSpec", observed.spec_error)],
            "workers": {"desired": 0, "pending": 0, "connected": 0, "draining": 0},
        }

    decision = observed.decision
    previous_workers = (previous or {}).get("workers") or {}
    desired = decision.desired if decision else int(previous_workers.get("desired", 0))
    workers = worker_counts(observed.pods, observed.stats, desired)
    conditions = [
        cond("Valid", "True", "SpecAccepted", "the spec is valid"),
        _manager_condition(observed, cond),
        _workers_condition(workers, cond),
        _scaling_condition(decision, workers, cond),
        _healthy_condition(observed.problems, cond),
    ]
    if observed.has_application:
        conditions += _outcome_conditions(observed.job, cond, observed.gave_up)

    phase = _phase(observed)
    status: dict[str, Any] = {
        "phase": phase,
        "message": _message(phase, workers, observed),
        "observedGeneration": gen,
        "conditions": conditions,
        "workers": workers,
    }
    if observed.problems:
        status["problems"] = [p.to_status() for p in observed.problems[:MAX_PROBLEMS]]
    if observed.stats is not None:
        status["tasks"] = observed.stats.tasks.model_dump()
    elif (previous or {}).get("tasks"):
        status["tasks"] = dict((previous or {})["tasks"])
    record = decision.record(now) if decision else None
    if record is not None:
        status["lastScaling"] = record.to_status()
    elif (previous or {}).get("lastScaling"):
        status["lastScaling"] = dict((previous or {})["lastScaling"])
    return status


class _CondFactory(Protocol):
    """The `cond` closure of `compute_status`: builds one condition."""

    def __call__(self, kind: str, status: ConditionStatus, reason: str, message: str) -> dict[str, Any]: ...


def _manager_condition(observed: Observed, cond: _CondFactory) -> dict[str, Any]:
    if not observed.state_store_ready:
        return cond("ManagerReady", "False", "StateStoreNotReady", "waiting for Redis")
    if not observed.manager_available:
        return cond(
            "ManagerReady",
            "False",
            "ManagerNotAvailable",
            "waiting for the manager pod",
        )
    return cond("ManagerReady", "True", "ManagerAvailable", "the manager is serving")


def _workers_condition(workers: Mapping[str, int], cond: _CondFactory) -> dict[str, Any]:
    desired, connected, pending = (
        workers["desired"],
        workers["connected"],
        workers["pending"],
    )
    if desired == 0 and connected == 0:
        return cond("WorkersReady", "True", "NoWorkersNeeded", "no workers needed")
    message = f"{connected} of {desired} workers connected, {pending} pending"
    if connected >= desired:
        return cond("WorkersReady", "True", "WorkersConnected", message)
    return cond("WorkersReady", "False", "WaitingForWorkers", message)


def _scaling_condition(
    decision: ScalingDecision | None, workers: Mapping[str, int], cond: _CondFactory
) -> dict[str, Any]:
    if decision is not None and decision.scaled:
        return cond("Scaling", "True", decision.event_reason, decision.reason)
    if workers["pending"]:
        return cond("Scaling", "True", "ScalingUp", f"{workers['pending']} pod(s) starting")
    if workers["draining"]:
        return cond(
            "Scaling",
            "True",
            "ScalingDown",
            f"{workers['draining']} worker(s) draining",
        )
    message = decision.reason if decision is not None else "no scaling in progress"
    return cond("Scaling", "False", "Stable", message)


def _healthy_condition(problems: list[Problem], cond: _CondFactory) -> dict[str, Any]:
    if not problems:
        return cond("Healthy", "True", "NoProblems", "no problem seen")
    message = "; ".join(p.sentence() for p in problems[:3])
    if len(problems) > 3:
        message += f"; and {len(problems) - 3} more (status.problems)"
    return cond("Healthy", "False", problems[0].reason, message[:1000])


def _outcome_conditions(
    job: JobOutcome | None, cond: _CondFactory, gave_up: str | None = None
) -> list[dict[str, Any]]:
    if gave_up is not None:
        return [
            cond("Succeeded", "False", "ManagerNotReady", gave_up),
            cond("Failed", "True", "ManagerNotReady", gave_up),
        ]
    if job == "Succeeded":
        return [
            cond(
                "Succeeded",
                "True",
                "ApplicationSucceeded",
                "the application Job succeeded",
            ),
            cond(
                "Failed",
                "False",
                "ApplicationSucceeded",
                "the application Job succeeded",
            ),
        ]
    if job == "Failed":
        return [
            cond("Succeeded", "False", "ApplicationFailed", "the application Job failed"),
            cond("Failed", "True", "ApplicationFailed", "the application Job failed"),
        ]
    running = "the application Job has not finished"
    return [
        cond("Succeeded", "False", "ApplicationRunning", running),
        cond("Failed", "False", "ApplicationRunning", running),
    ]


def _phase(observed: Observed) -> Phase:
    if observed.has_application and observed.gave_up is not None:
        return "Failed"
    if observed.has_application and observed.job in ("Succeeded", "Failed"):
        return "Succeeded" if observed.job == "Succeeded" else "Failed"
    if observed.manager_available and observed.state_store_ready:
        return "Running"
    return "Pending"


def _message(phase: Phase, workers: Mapping[str, int], observed: Observed) -> str:
    if phase == "Failed" and observed.gave_up is not None:
        return observed.gave_up
    if phase == "Failed":
        return "the application Job failed"
    if phase == "Succeeded":
        return "the application Job succeeded"
    if phase == "Pending":
        waiting = "waiting for Redis" if not observed.state_store_ready else "waiting for the manager"
        blocking = [p for p in observed.problems if p.component in ("manager", "redis")]
        return f"{waiting}: {blocking[0].sentence()}" if blocking else waiting
    done = observed.stats.tasks.done if observed.stats else 0
    return f"{workers['connected']} worker(s) connected, {done} task(s) done"


def merge_patch(status: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """`status` as a JSON merge patch over `previous`: fields the new status no longer has
    are set to None (removed), except kopf's own bookkeeping under `status.kopf`."""
    patch = dict(status)
    for key in previous or {}:
        if key not in patch and key != "kopf":
            patch[key] = None
    return patch


# --- lifecycle ---------------------------------------------------------------------------


def finished(status: Mapping[str, Any] | None) -> bool:
    """The application has ended (the workflow is Succeeded or Failed)."""
    return (status or {}).get("phase") in ("Succeeded", "Failed")


def finished_at(status: Mapping[str, Any] | None) -> float | None:
    """When the application ended: the transition time of the true outcome condition."""
    if not finished(status):
        return None
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            when = condition.get("lastTransitionTime")
            return _parse_time(str(when)) if when else None
    return None


def seconds_until_deletion(
    status: Mapping[str, Any] | None, ttl_seconds: int | None, now: float
) -> float | None:
    """For `ttlSecondsAfterFinished`: seconds left before the workflow must be deleted
    (0 when due), or None when it is not finished or has no TTL."""
    if ttl_seconds is None:
        return None
    ended = finished_at(status)
    if ended is None:
        return None
    return max(0.0, ended + ttl_seconds - now)


def last_scaling(status: Mapping[str, Any] | None) -> LastScaling | None:
    """The last scaling record kept in the status (the autoscaler's `last_decision`)."""
    return LastScaling.from_status((status or {}).get("lastScaling"))
