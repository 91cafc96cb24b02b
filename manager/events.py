"""What happens to the manager, as typed objects: the core's only input.

The service turns each message it reads (and each turn of its loop) into one of these and
hands it to :meth:`kubevine.manager.core.Core.handle`, the core's one entry, as distributed's
worker state machine takes stimuli in ``handle_stimulus``. Because every change of state
comes through there, a core can record the events it handled (``Core(record=True)``) and
:func:`kubevine.manager.core.replay` can feed them to a fresh core, which must reach the same
states and decide the same instructions: the events are the run.

Events are frozen and hold what the message carried; the core never changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.store import Snapshot
from kubevine.protocol import AttemptResult, LibrarySpec, TaskRef, TaskSpec, TransferRecord, WorkerInfo

# ------------------------------------------------------------------ time and the loop


@dataclass(frozen=True, slots=True)
class Clock:
    """The service read its clock: what follows happened at ``now`` (Unix seconds)."""

    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Time to look around: workers that went silent, undeclares that waited for their readers.

    ``heard_until``: the service has read every message that arrived until then (None: until
    the core's ``now``); silence is judged against it, never against the manager's own backlog.
    """

    heard_until: float | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """Place ready tasks and calls on workers with room (once per turn of the service's loop)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """A (re)starting manager loaded the workflow from its store: all of it, or (``whole``
    False) everything but the tasks, which follow in :class:`TasksRestored` slices while it
    serves, until :class:`RestoreDone`."""

    snapshot: Snapshot
    whole: bool = True


@dataclass(frozen=True, slots=True)
class TasksRestored:
    """A slice of the stored tasks (its snapshot holds only task tables): the next ones a
    scan read, or the ones a peer named before their slice came."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class RestoreDone:
    """Every stored task has been read."""


# ------------------------------------------------------------------ clients


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A client said hello (``attach``: a restarted client wants its uncollected tasks back)."""

    client: ClientId
    attach: bool = False


@dataclass(frozen=True, slots=True)
class ClientLeft:
    """A client said goodbye, or cannot be reached."""

    client: ClientId


@dataclass(frozen=True, slots=True)
class IdsRequested:
    """A client used up its block of task ids."""

    client: ClientId


@dataclass(frozen=True, slots=True)
class TasksSubmitted:
    """A client submitted tasks (``payloads``: each one's pickled function and arguments, or None)."""

    client: ClientId
    specs: Sequence[TaskSpec]
    payloads: Sequence[bytes | None]


@dataclass(frozen=True, slots=True)
class ResultsAcked:
    """The client has these results: the manager may forget them."""

    client: ClientId
    task_ids: Sequence[TaskId]


@dataclass(frozen=True, slots=True)
class FilesArrived:
    """These files are in the manager's file store (a client sent them, or they were there)."""

    names: Sequence[CacheName]


@dataclass(frozen=True, slots=True)
class FilesExpected:
    """A client began sending these files in pieces: tasks that read them wait until they are whole."""

    names: Sequence[CacheName]


@dataclass(frozen=True, slots=True)
class UploadFailed:
    """A client file did not arrive whole and sound (``why``): the tasks waiting for it fail."""

    name: CacheName
    why: str


@dataclass(frozen=True, slots=True)
class FileKept:
    """A file a client sent is small enough to keep in the state store too."""

    name: CacheName
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class FilesUndeclared:
    """The client no longer needs these files."""

    client: ClientId
    names: Sequence[CacheName]


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The client cancels these tasks, and those with ``tag``."""

    client: ClientId
    task_ids: Sequence[TaskId]
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Tuned:
    """A client set one of the workflow's settings (TaskVine's ``m.tune``)."""

    client: ClientId
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class LibraryInstalled:
    """A client registered a library (``payload``: its pickled functions)."""

    client: ClientId
    spec: LibrarySpec
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class LibraryRemoved:
    """A client removed a library."""

    client: ClientId
    name: str


# ------------------------------------------------------------------ workers


@dataclass(frozen=True, slots=True)
class WorkerConnected:
    """A worker said hello: new, reconnecting, or back after a manager restart."""

    info: WorkerInfo


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """A worker sent something: it is alive."""

    worker: WorkerId


@dataclass(frozen=True, slots=True)
class WorkerUpdated:
    """A worker reported: attempts started and ended, files cached and evicted, transfers done."""

    worker: WorkerId
    started: Sequence[TaskRef] = ()
    results: Sequence[AttemptResult] = ()
    frames: Sequence[bytes] = field(default=(), repr=False)
    cached: Sequence[CacheName] = ()
    evicted: Sequence[CacheName] = ()
    transfers: Sequence[TransferRecord] = ()


@dataclass(frozen=True, slots=True)
class LibraryReported:
    """A worker's library instance started, failed to start, or ended."""

    worker: WorkerId
    name: str
    state: Literal["ready", "failed", "gone"]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DrainRequested:
    """Stop giving these workers tasks (the autoscaler, an admin, or the worker itself)."""

    workers: Sequence[WorkerId]


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker left, or is declared lost, and why."""

    worker: WorkerId
    why: str


Event = (
    Clock
    | Tick
    | Schedule
    | Restored
    | TasksRestored
    | RestoreDone
    | ClientConnected
    | ClientLeft
    | IdsRequested
    | TasksSubmitted
    | ResultsAcked
    | FilesArrived
    | FilesExpected
    | UploadFailed
    | FileKept
    | FilesUndeclared
    | CancelRequested
    | Tuned
    | LibraryInstalled
    | LibraryRemoved
    | WorkerConnected
    | WorkerSeen
    | WorkerUpdated
    | LibraryReported
    | DrainRequested
    | WorkerLost
)

TICK = Tick()
SCHEDULE = Schedule()


class Shorthands:
    """One method per event, for tests and interactive use: each builds its event and hands
    it to :meth:`handle` (so a recorded core records it like any other)."""

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        self.handle(Clock(now))
        self.handle(TICK)

    def schedule(self) -> None:
        self.handle(SCHEDULE)

    def restore(self, snapshot: Snapshot) -> None:
        self.handle(Restored(snapshot))

    def client_connected(self, client: ClientId, attach: bool = False) -> None:
        self.handle(ClientConnected(client, attach))

    def client_disconnected(self, client: ClientId) -> None:
        self.handle(ClientLeft(client))

    def submit(self, client: ClientId, specs: Sequence[TaskSpec], payloads: Sequence[bytes | None]) -> None:
        self.handle(TasksSubmitted(client, specs, payloads))

    def results_acked(self, client: ClientId, task_ids: Sequence[TaskId]) -> None:
        self.handle(ResultsAcked(client, task_ids))

    def files_received(self, names: Iterable[CacheName]) -> None:
        self.handle(FilesArrived(tuple(names)))

    def files_expected(self, names: Iterable[CacheName]) -> None:
        self.handle(FilesExpected(tuple(names)))

    def upload_failed(self, name: CacheName, why: str) -> None:
        self.handle(UploadFailed(name, why))

    def tune(self, client: ClientId, name: str, value: float) -> None:
        self.handle(Tuned(client, name, value))

    def keep_file(self, name: CacheName, data: bytes) -> None:
        self.handle(FileKept(name, data))

    def undeclare(self, client: ClientId, names: Sequence[CacheName]) -> None:
        self.handle(FilesUndeclared(client, names))

    def cancel(self, client: ClientId, task_ids: Sequence[TaskId], tag: str | None = None) -> None:
        self.handle(CancelRequested(client, task_ids, tag))

    def install_library(self, client: ClientId, spec: LibrarySpec, payload: bytes) -> None:
        self.handle(LibraryInstalled(client, spec, payload))

    def remove_library(self, client: ClientId, name: str) -> None:
        self.handle(LibraryRemoved(client, name))

    def worker_connected(self, info: WorkerInfo) -> None:
        self.handle(WorkerConnected(info))

    def worker_seen(self, worker: WorkerId) -> None:
        self.handle(WorkerSeen(worker))

    def worker_update(
        self,
        worker: WorkerId,
        started: Sequence[TaskRef],
        results: Sequence[AttemptResult],
        frames: Sequence[bytes],
        cached: Sequence[CacheName] = (),
        evicted: Sequence[CacheName] = (),
        transfers: Sequence[TransferRecord] = (),
    ) -> None:
        self.handle(WorkerUpdated(worker, started, results, frames, cached, evicted, transfers))

    def library_status(
        self, worker: WorkerId, name: str, state: Literal["ready", "failed", "gone"], error: str | None
    ) -> None:
        self.handle(LibraryReported(worker, name, state, error))

    def drain(self, workers: Sequence[WorkerId]) -> None:
        self.handle(DrainRequested(workers))

    def worker_lost(self, worker: WorkerId, why: str) -> None:
        self.handle(WorkerLost(worker, why))
