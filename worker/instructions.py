"""What the worker core asks its service to do, as typed objects: the core's only output.

:meth:`kubevine.worker.core.WorkerCore.handle` returns a list of these; the service
(:mod:`kubevine.worker.service`) carries them out in order — starts processes, hands calls to
libraries, fetches and makes files, deletes them, sends messages on its session. Whatever an
instruction leads to comes back to the core as an event (a process that could not start is a
:class:`~kubevine.worker.events.ProcessExited`, a value stored is a
:class:`~kubevine.worker.events.ValueKept`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    Assignment,
    AttemptResult,
    CacheLevel,
    FileBinding,
    LibrarySpec,
    StageIn,
    WorkerUpdate,
)

# ------------------------------------------------------------------ tasks


@dataclass(slots=True)
class StartProcess:
    """Start this attempt's process (a command or a PythonTask) in a sandbox with its inputs."""

    assignment: Assignment
    payload: bytes


@dataclass(slots=True)
class StartCall:
    """Hand this function call to its library (queued there until the library is ready)."""

    assignment: Assignment
    payload: bytes


@dataclass(slots=True)
class CancelCall:
    """Take this call back from its library's queue if it has not been sent yet (a call
    already running in the library cannot be interrupted: its result is ignored)."""

    library: str
    task_id: TaskId


@dataclass(slots=True)
class KillProcess:
    """Kill this attempt's process; its exit still comes back as a ProcessExited."""

    task_id: TaskId
    attempt: int


@dataclass(slots=True)
class KeepValue:
    """Store a call's return value (pickled) in the cache as its temp output ``binding``;
    answer with ValueKept."""

    result: AttemptResult
    data: bytes
    binding: FileBinding


@dataclass(slots=True)
class SpillValue:
    """A call's result is too large for a message: keep it in the cache under its spill name
    (``AttemptResult.output_spill``); answer with ValueKept."""

    result: AttemptResult
    data: bytes


# ------------------------------------------------------------------ files


@dataclass(slots=True)
class Adopt:
    """A file already in the (shared) cache is an input here: account for it at ``level``."""

    name: CacheName
    level: CacheLevel


@dataclass(slots=True)
class Fetch:
    """Bring this file into the cache from its sources (its arrival is a FilesArrived);
    ``mode``: the owner bits its cache copy should have (the first binding's wish)."""

    stage: StageIn
    mode: int | None = None


@dataclass(slots=True)
class Derive:
    """Make this file here (unpack an archive, run a minitask) once its parts are cached."""

    binding: FileBinding


@dataclass(slots=True)
class DeleteFromCache:
    """Remove this entry from the cache (a task-level input whose task ended, an undeclared file)."""

    name: CacheName


# ------------------------------------------------------------------ libraries


@dataclass(slots=True)
class StartLibrary:
    """Start a process for this library and hand it its functions."""

    spec: LibrarySpec
    payload: bytes


@dataclass(slots=True)
class RestartLibrary:
    """The library's process crashed: start it again (calls still queued go to the new one)."""

    name: str


@dataclass(slots=True)
class StopLibrary:
    """Stop the library's process and forget it."""

    name: str


# ------------------------------------------------------------------ messages to the manager


@dataclass(slots=True)
class SendUpdate:
    """Report what started, finished, arrived and left since the last update."""

    update: WorkerUpdate
    frames: list[bytes]


@dataclass(slots=True)
class SendLibraryStatus:
    name: str
    state: Literal["ready", "failed", "gone"]
    error: str | None = None


@dataclass(slots=True)
class SendDrain:
    """Ask the manager to drain this worker (it was told to stop)."""


@dataclass(slots=True)
class SendGoodbye:
    reason: str


@dataclass(slots=True)
class Exit:
    """Leave the loop with this exit code (after what came before in the same list)."""

    code: int


Instruction = (
    StartProcess
    | StartCall
    | CancelCall
    | KillProcess
    | KeepValue
    | SpillValue
    | Adopt
    | Fetch
    | Derive
    | DeleteFromCache
    | StartLibrary
    | RestartLibrary
    | StopLibrary
    | SendUpdate
    | SendLibraryStatus
    | SendDrain
    | SendGoodbye
    | Exit
)
