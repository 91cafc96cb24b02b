"""What the core decides, for the service to carry out: the core's only output.

Each event the core handles may append instructions to ``core.out`` (send these tasks to that
worker, deliver these results to that client, ...); the service takes them once per cycle,
persists the cycle's writes first, then turns each instruction into a message with a ``match``
that mypy checks covers :data:`Instruction`. Nothing here knows about sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.protocol import Assignment, ClientResult, StageIn, TaskRef, TaskSpec


@dataclass(slots=True)
class SendDispatch:
    """Run these tasks (``frames``: their payloads, indexed by each assignment)."""

    worker: WorkerId
    tasks: list[Assignment]
    frames: list[bytes]


@dataclass(slots=True)
class SendKill:
    """Stop these attempts (cancelled, or taken back from a draining worker)."""

    worker: WorkerId
    tasks: list[TaskRef]


@dataclass(slots=True)
class SendResults:
    """Deliver finished tasks' results to their client."""

    client: ClientId
    results: list[tuple[ClientResult, list[bytes]]]


@dataclass(slots=True)
class SendAck:
    """These results are stored: the worker may forget them (sent once the batch is durable)."""

    worker: WorkerId
    tasks: list[TaskRef]


@dataclass(slots=True)
class SendDrain:
    """The draining worker has nothing left: it may leave."""

    worker: WorkerId


@dataclass(slots=True)
class ClientError:
    """Something the client sent cannot be honoured."""

    client: ClientId
    code: str
    message: str
    task_ids: list[TaskId]


@dataclass(slots=True)
class SendInstall:
    """Start an instance of ``library`` on ``worker``, once ``stage`` (its inputs) is there."""

    worker: WorkerId
    library: str
    stage: list[StageIn] = field(default_factory=list)


@dataclass(slots=True)
class SendRemove:
    """Stop the instance of ``library`` on ``worker``."""

    worker: WorkerId
    library: str


@dataclass(slots=True)
class SendPeerLost:
    """Tell ``worker`` that ``lost`` is gone: stop waiting for files from it."""

    worker: WorkerId
    lost: WorkerId
    address: str | None


@dataclass(slots=True)
class SendForget:
    """Tell ``worker`` to delete these files from its cache (undeclared by the client)."""

    worker: WorkerId
    names: list[CacheName]


@dataclass(slots=True)
class SendWelcome:
    """Welcome a client that said hello: its block of task ids, and (when it attaches after a
    restart of its own) the tasks it submitted and has not collected. Sent once durable."""

    client: ClientId
    first_task_id: TaskId
    id_block: int
    tasks: list[TaskSpec]


@dataclass(slots=True)
class SendIdBlock:
    """Another block of task ids for a client (sent once durable)."""

    client: ClientId
    first_task_id: TaskId
    count: int


Instruction = (
    SendDispatch
    | SendKill
    | SendForget
    | SendResults
    | SendAck
    | SendDrain
    | ClientError
    | SendInstall
    | SendRemove
    | SendPeerLost
    | SendWelcome
    | SendIdBlock
)
