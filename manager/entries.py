"""What the manager's core keeps about each task and each worker.

Plain slotted records, changed in place by the core and its helpers (the lifecycle in
:mod:`kubevine.manager.states`, the data plane, library scheduling, recovery). They live apart
from :mod:`kubevine.manager.core` so that those helpers can build and read them without
importing the core itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.libraries import Instance
from kubevine.manager.states import WorkerState
from kubevine.manager.store import TaskRecord
from kubevine.protocol import ClientResult, TaskSpec, WorkerInfo
from kubevine.resources import Tally
from kubevine.states import TaskState


@dataclass(slots=True)
class TaskEntry:
    spec: TaskSpec
    payload: bytes | None
    client: ClientId
    state: TaskState
    seq: int
    attempt: int = 0
    failures: int = 0
    lost: int = 0
    worker: WorkerId | None = None
    result: ClientResult | None = None
    frames: list[bytes] = field(default_factory=list)
    unschedulable: bool = False
    rerun: bool = False  # running again to regenerate a lost temp file
    waits: int = 0  # files it is registered as waiting for (core.waiting_for)
    story: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self) -> TaskRecord:
        return TaskRecord(
            self.client, self.state, self.attempt, self.failures, self.lost, self.worker, self.seq
        )


@dataclass(slots=True)
class WorkerEntry:
    info: WorkerInfo
    state: WorkerState
    last_seen: float
    committed: Tally = field(default_factory=Tally)
    tasks: dict[TaskId, int] = field(default_factory=dict)  # task -> attempt
    queued: int = 0  # dispatched, not yet reported started
    idle_since: float | None = None
    cached: set[CacheName] = field(default_factory=set)
    deadline: float | None = None  # RECOVERING: lost if not back by then
    libs: dict[str, Instance] = field(default_factory=dict)  # library instances here
    calls: int = 0  # function calls among ``tasks`` (they hold library slots, not cores)

    @property
    def id(self) -> WorkerId:
        return self.info.worker_id
