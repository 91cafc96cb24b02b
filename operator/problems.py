"""What is wrong with a workflow's pods, read from what the API server says about them.

Exists so that a failure a platform engineer would otherwise find only by `kubectl describe`
on the right pod — an image that cannot be pulled, a pod no node can take, a container
that crashes again and again, a pod the API server refused to create — shows on the
VineWorkflow itself: in `status.problems`, in the `Healthy` condition, and as one Warning
Event when it first appears. Pure: objects in, `Problem`s out; `new_problems` says which
ones have not been reported before (the previous status is the memory, so an operator
restart does not post them again).

Each reason is the one Kubernetes uses where there is one (`ImagePullBackOff`,
`Unschedulable`, `CrashLoopBackOff`, `CreateContainerConfigError`, `OOMKilled`, ...), so it
can be searched for; the operator adds `PodCreateForbidden` / `PodCreateRejected` (the API
server's 403 / 422 on a pod it asked for: Pod Security, a quota, a webhook),
`WorkerPodFailed` (and `ManagerPodFailed`, `ApplicationPodFailed`), `PodNotStarting` and
`ReconcileFailed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Waiting reasons of a container that mean it will not start without help.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
#: A pod still creating its containers after this long is reported (a volume that cannot be
#: mounted, e.g. a node cache folder nobody prepared, shows only as ContainerCreating).
SLOW_START_SECONDS = 120.0
#: A container that restarted this recently is reported (crash-looping or restarted once).
RECENT_RESTART_SECONDS = 600.0
#: Most problems kept in the status (the rest are counted in the condition's message).
MAX_PROBLEMS = 10
MAX_MESSAGE = 300


@dataclass(frozen=True)
class Problem:
    """One thing wrong, about one component (and pod, if it is about a pod)."""

    component: str
    reason: str
    message: str
    pod: str | None = None

    def to_status(self) -> dict[str, Any]:
        """The `status.problems[]` entry."""
        entry = {"component": self.component, "reason": self.reason, "message": self.message[:MAX_MESSAGE]}
        if self.pod:
            entry["pod"] = self.pod
        return entry

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Problem:
        """Read back a `status.problems[]` entry."""
        return cls(
            component=str(entry.get("component", "")),
            reason=str(entry.get("reason", "")),
            message=str(entry.get("message", "")),
            pod=str(entry["pod"]) if entry.get("pod") else None,
        )

    def sentence(self) -> str:
        """One line for an Event or a condition: who, then what."""
        who = f"{self.component} pod {self.pod}" if self.pod else self.component
        return f"{who}: {self.reason}: {self.message}"


def _time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def termination(pod: Mapping[str, Any]) -> str:
    """Why a failed pod ended: the container's reason and exit code, or the pod's reason."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated")
        if ended:
            text = f"{ended.get('reason') or 'Error'} (exit code {ended.get('exitCode')})"
            return f"{text}: {ended['message']}" if ended.get("message") else text
    reason = status.get("reason") or "Failed"
    return f"{reason}: {status['message']}" if status.get("message") else str(reason)


def pod_problems(pod: Mapping[str, Any], component: str, now: float) -> list[Problem]:
    """What is wrong with one pod, if anything (a pod being deleted has nothing to report)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return []
    name = str(meta.get("name", ""))
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        return [Problem(component, f"{component.capitalize()}PodFailed", termination(pod), name)]
    if phase == "Succeeded":
        return []
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        return [
            Problem(
                component,
                str(scheduled.get("reason") or "Unschedulable"),
                str(scheduled.get("message") or ""),
                name,
            )
        ]
    found = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        last = (container.get("lastState") or {}).get("terminated") or {}
        restarts = int(container.get("restartCount") or 0)
        ended = _time(last.get("finishedAt"))
        if reason == "CrashLoopBackOff" or (
            restarts and ended is not None and now - ended < RECENT_RESTART_SECONDS
        ):
            # Between two back-offs the container runs for a moment: the problem stays until
            # it has run for a while without restarting, so it does not come and go.
            found.append(
                Problem(
                    component,
                    "CrashLoopBackOff" if restarts > 1 or reason == "CrashLoopBackOff" else "Restarted",
                    f"restarted {restarts} times, last exit {last.get('reason') or 'Error'} "
                    f"(exit code {last.get('exitCode')})"
                    if last
                    else f"restarted {restarts} times; {waiting.get('message') or 'back-off restarting'}",
                    name,
                )
            )
        elif reason in STUCK_REASONS:
            # A kubelet alternates ErrImagePull (an attempt) and ImagePullBackOff (the wait
            # after it): one problem, not one per attempt.
            kind = "ImagePullBackOff" if reason == "ErrImagePull" else str(reason)
            found.append(Problem(component, kind, str(waiting.get("message") or ""), name))
        elif reason == "ContainerCreating" and phase == "Pending":
            created = _time(meta.get("creationTimestamp"))
            if created is not None and now - created > SLOW_START_SECONDS:
                found.append(
                    Problem(
                        component,
                        "PodNotStarting",
                        f"containers not started after {now - created:.0f}s "
                        f"(kubectl describe pod {name}: a volume may be missing)",
                        name,
                    )
                )
    return found[:1]


def deployment_problems(deployment: Mapping[str, Any] | None, component: str) -> list[Problem]:
    """A ReplicaSet that cannot create pods (Pod Security, quota, a webhook)."""
    if deployment is None:
        return []
    failure = _condition(deployment, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return [
            Problem(
                component, str(failure.get("reason") or "FailedCreate"), str(failure.get("message") or "")
            )
        ]
    return []


def creation_problem(component: str, status: int, message: str) -> Problem:
    """The API server refused a pod the operator asked for."""
    reason = {403: "PodCreateForbidden", 422: "PodCreateRejected"}.get(status, "PodCreateFailed")
    return Problem(component, reason, message)


def merge(problems: Iterable[Problem]) -> list[Problem]:
    """One problem per (component, reason): several pods with the same trouble become one
    entry naming how many, so ten Unschedulable workers are one line, not ten."""
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.component, problem.reason), []).append(problem)
    merged = []
    for (component, reason), group in groups.items():
        first = group[0]
        if len(group) == 1:
            merged.append(first)
        else:
            pods = sorted(p.pod for p in group if p.pod)
            named = ", ".join(pods[:3]) + (", …" if len(pods) > 3 else "")
            merged.append(Problem(component, reason, f"{len(group)} pods ({named}): {first.message}"))
    return merged


def previous_problems(status: Mapping[str, Any] | None) -> list[Problem]:
    """The problems the last status reported."""
    return [Problem.from_status(e) for e in (status or {}).get("problems") or [] if isinstance(e, Mapping)]


def new_problems(current: Sequence[Problem], previous: Sequence[Problem]) -> list[Problem]:
    """The problems not reported before (by component and reason): each gets one Event."""
    seen = {(p.component, p.reason) for p in previous}
    return [p for p in current if (p.component, p.reason) not in seen]
