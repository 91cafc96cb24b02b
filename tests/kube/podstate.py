"""What the process kubelet knows of a pod it runs, and the status it reports from that.

`PodRun` and `ContainerRun` are the kubelet's bookkeeping (processes, restarts, probes,
why a pod waits); `pod_status` and `container_status` turn them into the `status` a
kubelet writes: phase, conditions, container states. Pure functions, no I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from . import podspec

Obj = dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Probe:
    spec: Obj
    ready: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    running: bool = False


@dataclasses.dataclass
class ContainerRun:
    spec: Obj
    init: bool = False
    argv: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    mounts: list[podspec.Mount] = dataclasses.field(default_factory=list)
    cwd: pathlib.Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    next_start: float = 0.0
    readiness: Probe | None = None
    liveness: Probe | None = None
    last_terminated: Obj | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ready(self) -> bool:
        if not self.running:
            return False
        return self.readiness.ready if self.readiness is not None else True


@dataclasses.dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    ip: str
    node: str
    pod_dir: pathlib.Path
    restart_policy: str
    containers: list[ContainerRun] = dataclasses.field(default_factory=list)
    init_containers: list[ContainerRun] = dataclasses.field(default_factory=list)
    prepared: bool = False
    waiting_since: float = dataclasses.field(default_factory=time.monotonic)
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    failed_reason: str | None = None
    failed_message: str | None = None
    terminating: asyncio.Task[None] | None = None
    started_at: str = dataclasses.field(default_factory=_now)
    last_status: Obj | None = None

    def all_containers(self) -> Iterator[ContainerRun]:
        yield from self.init_containers
        yield from self.containers


def should_restart(run: PodRun, c: ContainerRun) -> bool:
    """Whether an exited container starts again (init containers: as OnFailure under Always)."""
    policy = "OnFailure" if c.init and run.restart_policy == "Always" else run.restart_policy
    return policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)


def _just_ended(c: ContainerRun) -> Obj:
    return {
        "terminated": {
            "exitCode": c.exit_code,
            "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
            "startedAt": c.started_at,
            "finishedAt": c.finished_at,
        }
    }


def container_status(c: ContainerRun, run: PodRun) -> Obj:
    state: Obj
    if c.running:
        state = {"running": {"startedAt": c.started_at}}
    elif c.next_start:
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off restarting container {c.name}",
            }
        }
    elif c.exit_code is not None:
        state = {
            "terminated": {
                "exitCode": c.exit_code,
                "reason": c.reason or "Error",
                "startedAt": c.started_at,
                "finishedAt": c.finished_at,
                **({"message": c.message} if c.message else {}),
            }
        }
    else:
        reason = run.failed_reason or run.waiting_reason
        state = {
            "waiting": {
                "reason": reason,
                **(
                    {"message": run.failed_message or run.waiting_message}
                    if (run.failed_message or run.waiting_message)
                    else {}
                ),
            }
        }
    result = {
        "name": c.name,
        "image": c.spec.get("image", ""),
        "imageID": f"process://{c.spec.get('image', '')}",
        "ready": c.ready,
        "started": c.running,
        "restartCount": c.restart_count,
        "state": state,
        # In back-off the exit just seen is already the last state, as a kubelet reports it.
        "lastState": _just_ended(c) if c.next_start else (c.last_terminated or {}),
    }
    if c.proc is not None:
        result["containerID"] = f"process://{c.proc.pid}"
    return result


def pod_status(pod: Obj, run: PodRun, *, host_ip: str) -> Obj:
    """The pod's status as a kubelet writes it, from what its processes are doing."""
    containers = [container_status(c, run) for c in run.containers]
    init = [container_status(c, run) for c in run.init_containers]
    initialized = all(c.exit_code == 0 for c in run.init_containers)
    if run.failed_reason is not None:
        phase = "Failed"
    elif (
        not run.prepared
        or not initialized
        or any(c.proc is None and c.exit_code is None for c in run.containers)
    ):
        phase = "Pending" if not any(c.started_at for c in run.containers) else "Running"
    elif all(c.exit_code is not None and not should_restart(run, c) for c in run.containers):
        phase = "Succeeded" if all(c.exit_code == 0 for c in run.containers) else "Failed"
    else:
        phase = "Running"
    ready = phase == "Running" and all(c.ready for c in run.containers)
    t = _now()
    old = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}

    def cond(type_: str, ok: bool, reason: str = "") -> Obj:
        prev = old.get(type_)
        value = "True" if ok else "False"
        since = prev["lastTransitionTime"] if prev and prev.get("status") == value else t
        return {
            "type": type_,
            "status": value,
            "lastTransitionTime": since,
            **({"reason": reason} if reason and not ok else {}),
        }

    status: Obj = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": run.ip,
        "podIPs": [{"ip": run.ip}],
        "startTime": run.started_at,
        "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
        "conditions": [
            cond("PodScheduled", True),
            cond("Initialized", initialized, "ContainersNotInitialized"),
            cond("ContainersReady", ready, "ContainersNotReady"),
            cond("Ready", ready, "ContainersNotReady"),
        ],
        "containerStatuses": containers,
    }
    if init:
        status["initContainerStatuses"] = init
    if run.failed_reason is not None:
        status["reason"], status["message"] = run.failed_reason, run.failed_message
    return status
