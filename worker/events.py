"""What happens to a worker, as typed objects: the worker core's only input.

The service (:mod:`kubevine.worker.service`) turns each message from the manager, each process
that exits, each library message, each file that lands in the cache and each turn of its loop
into one of these and hands it to :meth:`kubevine.worker.core.WorkerCore.handle`, as
distributed's worker state machine takes stimuli. Each event carries what the core needs to
decide, already read from the outside world (a process's result, a fetch's outcome, the time),
so the core itself never reads a file, a socket or a clock.

Events are frozen; the core never changes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import Assignment, AttemptResult, LibrarySpec, TaskRef, TransferRecord

Frames = Sequence[bytes]

# ------------------------------------------------------------------ the connection and the loop


@dataclass(frozen=True, slots=True)
class Tick:
    """One turn of the service's loop ends at ``now`` (``time.monotonic``): start what can
    start, report what happened, and leave when drained or idle."""

    now: float


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The manager took this worker (again: results it may not have recorded go again)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost or forgotten by the manager: hold reports until welcomed."""


@dataclass(frozen=True, slots=True)
class TermRequested:
    """SIGTERM or SIGINT: drain (finish what runs, then leave); a second one leaves now."""


@dataclass(frozen=True, slots=True)
class Released:
    """The manager releases this (drained) worker: say goodbye and leave."""


# ------------------------------------------------------------------ tasks


@dataclass(frozen=True, slots=True)
class TasksAssigned:
    """The manager dispatched these attempts here, in this order (``payloads``: each one's
    pickled function/arguments, ``b""`` for none). One event per Dispatch: at thousands of
    tasks a second, the per-event cost counts."""

    assignments: Sequence[Assignment]
    payloads: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class KillRequested:
    """The manager does not want these attempts any more (cancelled or superseded)."""

    tasks: Sequence[TaskRef]


@dataclass(frozen=True, slots=True)
class ResultsAcked:
    """The manager recorded these results: they need not be reported again."""

    tasks: Sequence[TaskRef]


@dataclass(frozen=True, slots=True)
class ProcessExited:
    """A task's process ended (or could not start) and its result was collected. ``cached``:
    its temp outputs, moved into the cache; ``evicted``: what was evicted to make room."""

    result: AttemptResult
    frames: Frames = ()
    cached: Sequence[CacheName] = ()
    evicted: Sequence[CacheName] = ()


@dataclass(frozen=True, slots=True)
class OutputGrew:
    """A watched output of a running attempt has new content: ``data`` at ``offset``."""

    task_id: TaskId
    attempt: int
    remote_name: str
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CallsReturned:
    """Function calls' results came back from their library, each with its frames (the
    pickled value); or a call could not be made. Files its outputs put in the cache (temps,
    spills) are named as a process's are."""

    results: Sequence[tuple[AttemptResult, Frames]]
    cached: Sequence[CacheName] = ()
    evicted: Sequence[CacheName] = ()


@dataclass(frozen=True, slots=True)
class ValueKept:
    """A call's return value was stored in the cache as asked (:class:`KeepValue`);
    ``result`` is the call's result as it is to be reported; ``cached``: the value's name in
    the cache, or None when storing failed (and ``result`` says why)."""

    result: AttemptResult
    cached: CacheName | None
    evicted: Sequence[CacheName] = ()


# ------------------------------------------------------------------ files


@dataclass(frozen=True, slots=True)
class FilesArrived:
    """Files are now in the cache (fetched, found on the node, made here): tasks waiting for
    them may start. ``cached``: those the manager learns of as new replicas here;
    ``evicted``: removed to make room; ``transfers``: each fetch attempt, for the accounts."""

    present: Sequence[CacheName] = ()
    cached: Sequence[CacheName] = ()
    evicted: Sequence[CacheName] = ()
    transfers: Sequence[TransferRecord] = ()


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """No source had these files, or they could not be made: ``(name, why)``."""

    failures: Sequence[tuple[CacheName, str]]


@dataclass(frozen=True, slots=True)
class ForgetRequested:
    """The client undeclared these files: delete them here (once no task reads them)."""

    names: Sequence[CacheName]


# ------------------------------------------------------------------ libraries


@dataclass(frozen=True, slots=True)
class InstallRequested:
    """The manager asks for this library here."""

    spec: LibrarySpec
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class RemoveRequested:
    """The manager asks to stop this library here."""

    name: str


@dataclass(frozen=True, slots=True)
class LibraryReady:
    """The library's process imported its functions: calls may go to it."""

    name: str


@dataclass(frozen=True, slots=True)
class LibraryFailed:
    """The library's process could not start (``error``: what it said)."""

    name: str
    error: str


@dataclass(frozen=True, slots=True)
class LibraryDied:
    """The library's process is gone. ``failed``: the calls it was running, failed;
    ``may_restart``: it has not crashed too often to be started again."""

    name: str
    why: str
    failed: Sequence[AttemptResult] = field(default_factory=tuple)
    may_restart: bool = False
    log_tail: str = ""


Event = (
    Tick
    | Welcomed
    | Disconnected
    | TermRequested
    | Released
    | TasksAssigned
    | KillRequested
    | ResultsAcked
    | ProcessExited
    | OutputGrew
    | CallsReturned
    | ValueKept
    | FilesArrived
    | FetchFailed
    | ForgetRequested
    | InstallRequested
    | RemoveRequested
    | LibraryReady
    | LibraryFailed
    | LibraryDied
)
