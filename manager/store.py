"""The state store contract, the write batch the core fills, and the in-memory store.

The manager is the only writer of workflow state. Each scheduling cycle, the core records
what changed in a :class:`WriteBatch`; the service hands the batch to a :class:`StateStore`
in one call (for Redis: one pipelined, fenced transaction). Two stores honour the contract:
:class:`MemoryStore` (the embedded default on a laptop; not fault tolerant) and
:class:`kubevine.manager.redis_store.RedisStore` (what a cluster runs). The same contract
tests run against both.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.protocol import ClientResult, LibrarySpec, TaskSpec, WorkerInfo

_jstr: Callable[[str], str] = json.encoder.encode_basestring_ascii  # a str as a JSON string

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The state store cannot be used (unreachable, or our lease was taken)."""


class StoreUnreachable(StoreError):
    """The state store does not answer (yet): nothing listens there, or the connection failed."""


class LeaseHeld(StoreError):
    """Another live manager holds this workflow."""


class StoreRejected(StoreError):
    """The store answered but refused this write for a reason other than fencing (Redis said
    no to the command itself): retrying the identical batch cannot help, so it is fatal."""


class StoreWiped(StoreError):
    """The store lost this workflow's state (a Redis restarted without persistence): the
    manager, which still holds everything in memory, must write it all again (a reseed)."""


class TaskRecord(NamedTuple):
    """A task's mutable state, stored apart from its (immutable) spec.

    A plain tuple: one is made per changed task per cycle, so it must be cheap.
    Stored as a JSON array in this field order.
    """

    client: ClientId
    state: str
    attempt: int = 0
    failures: int = 0
    lost: int = 0
    worker: WorkerId | None = None
    seq: int = 0

    def to_json(self) -> str:
        """``json.dumps(self)``, written out: one is made per changed task per cycle."""
        w = "null" if self.worker is None else _jstr(self.worker)
        return (
            f"[{_jstr(self.client)}, {_jstr(self.state)}, {self.attempt:d}, {self.failures:d},"
            f" {self.lost:d}, {w}, {self.seq:d}]"
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> TaskRecord:
        return cls(*json.loads(raw))


@dataclass
class WriteBatch:
    """Everything one scheduling cycle changed. Later writes to a key replace earlier ones."""

    specs: dict[TaskId, tuple[TaskSpec, bytes | None]] = field(default_factory=dict)
    records: dict[TaskId, TaskRecord] = field(default_factory=dict)
    results: dict[TaskId, tuple[ClientResult, list[bytes]]] = field(default_factory=dict)
    deleted: set[TaskId] = field(default_factory=set)
    workers: dict[WorkerId, WorkerInfo | None] = field(default_factory=dict)  # None = gone
    meta: dict[str, str] = field(default_factory=dict)
    libraries: dict[str, tuple[LibrarySpec, bytes] | None] = field(default_factory=dict)  # None = removed
    files: dict[CacheName, bytes] = field(default_factory=dict)  # contents clients sent
    replicas: dict[tuple[WorkerId, CacheName], str | None] = field(default_factory=dict)  # None = gone
    collected: set[TaskId] = field(default_factory=set)  # results the client has (task kept)
    reseed: bool = False  # the whole state: replace whatever the store holds

    def __bool__(self) -> bool:
        return bool(
            self.specs
            or self.records
            or self.results
            or self.deleted
            or self.workers
            or self.meta
            or self.libraries
            or self.files
            or self.replicas
            or self.collected
            or self.reseed
        )


@dataclass
class Snapshot:
    """The whole stored state of a workflow, as loaded at manager start."""

    specs: dict[TaskId, tuple[TaskSpec, bytes | None]] = field(default_factory=dict)
    records: dict[TaskId, TaskRecord] = field(default_factory=dict)
    results: dict[TaskId, tuple[ClientResult, list[bytes]]] = field(default_factory=dict)
    workers: dict[WorkerId, WorkerInfo] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    libraries: dict[str, tuple[LibrarySpec, bytes]] = field(default_factory=dict)
    files: dict[CacheName, bytes] = field(default_factory=dict)
    replicas: dict[tuple[WorkerId, CacheName], str] = field(default_factory=dict)


def head_counts(snap: Snapshot) -> tuple[int, int, int, int]:
    """The workers, libraries, files and replicas a snapshot holds (for a restart's log)."""
    return len(snap.workers), len(snap.libraries), len(snap.files), len(snap.replicas)


class StateStore(abc.ABC):
    """Where a workflow's state lives between cycles and across manager restarts."""

    #: whether state survives the manager process
    durable: bool = False

    @abc.abstractmethod
    def acquire(self, owner: str, ttl: float) -> int:
        """Take the workflow's lease; returns the new fencing epoch or raises LeaseHeld."""

    @abc.abstractmethod
    def renew(self, owner: str, ttl: float) -> None:
        """Extend the lease (taking it again if it ran out while no one else took it);
        StoreError if it was lost to another manager, StoreWiped if the store forgot the
        workflow altogether."""

    @abc.abstractmethod
    def release(self, owner: str) -> None:
        """Give the lease up (clean shutdown)."""

    @abc.abstractmethod
    def load(self) -> Snapshot:
        """Everything stored for this workflow."""

    def incarnation(self) -> str:
        """What tells one run of the store from the next (a restarted Redis orders a scan anew)."""
        return ""

    @abc.abstractmethod
    def count_tasks(self) -> int:
        """How many tasks are stored."""

    @abc.abstractmethod
    def load_head(self) -> Snapshot:
        """Everything stored for this workflow but its tasks (they are read with
        :meth:`scan_tasks` and :meth:`load_tasks`)."""

    @abc.abstractmethod
    def scan_tasks(self, cursor: int, count: int) -> tuple[int, Snapshot]:
        """About ``count`` stored tasks from ``cursor`` (0 to begin) and the cursor that goes
        on from them, 0 after the last. A task may come twice; one written or deleted during
        the scan may or may not come."""

    @abc.abstractmethod
    def load_tasks(self, ids: Sequence[TaskId]) -> Snapshot:
        """The stored tasks among ``ids`` (the others are not stored)."""

    @abc.abstractmethod
    def apply(self, batch: WriteBatch) -> None:
        """Write one cycle's changes atomically, fenced by our epoch."""

    @abc.abstractmethod
    def publish_stats(self, stats_json: str) -> None:
        """Make the latest stats visible to the operator."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryStore(StateStore):
    """State in this process only: fast, and lost with the manager."""

    durable = False

    def __init__(self) -> None:
        self._snap = Snapshot()
        self._owner: str | None = None
        self._epoch = 0
        self.stats_json = "{}"
        log.warning(
            "state is kept in memory: this workflow is not fault tolerant "
            "(a manager restart loses it); use --redis for durable state"
        )

    def acquire(self, owner: str, ttl: float) -> int:
        if self._owner not in (None, owner):
            raise LeaseHeld(f"workflow is held by {self._owner}")
        self._owner = owner
        self._epoch += 1
        return self._epoch

    def renew(self, owner: str, ttl: float) -> None:
        if self._owner != owner:
            raise StoreError("lease lost")

    def release(self, owner: str) -> None:
        if self._owner == owner:
            self._owner = None

    def load(self) -> Snapshot:
        # what is stored now: later writes change the store, never a snapshot already handed out
        s = self._snap
        return Snapshot(
            dict(s.specs),
            dict(s.records),
            dict(s.results),
            dict(s.workers),
            dict(s.meta),
            dict(s.libraries),
            dict(s.files),
            dict(s.replicas),
        )

    def count_tasks(self) -> int:
        return len(self._snap.records)

    def load_head(self) -> Snapshot:
        s = self._snap
        return Snapshot(
            workers=dict(s.workers),
            meta=dict(s.meta),
            libraries=dict(s.libraries),
            files=dict(s.files),
            replicas=dict(s.replicas),
        )

    def scan_tasks(self, cursor: int, count: int) -> tuple[int, Snapshot]:
        # the cursor is the next task id: writes and deletes meanwhile move nothing else
        ids = sorted(t for t in self._snap.records if t >= cursor)
        return (ids[count] if len(ids) > count else 0), self.load_tasks(ids[:count])

    def load_tasks(self, ids: Sequence[TaskId]) -> Snapshot:
        s, part = self._snap, Snapshot()
        for tid in ids:
            if tid in s.records and tid in s.specs:
                part.records[tid] = s.records[tid]
                part.specs[tid] = s.specs[tid]
                if tid in s.results:
                    part.results[tid] = s.results[tid]
        return part

    def apply(self, batch: WriteBatch) -> None:
        if batch.reseed:
            self._snap = Snapshot()
        s = self._snap
        s.specs.update(batch.specs)
        s.records.update(batch.records)
        s.results.update(batch.results)
        for tid in batch.collected:
            s.results.pop(tid, None)
        for tid in batch.deleted:
            s.specs.pop(tid, None)
            s.records.pop(tid, None)
            s.results.pop(tid, None)
        _merge(s.workers, batch.workers)
        s.meta.update(batch.meta)
        _merge(s.libraries, batch.libraries)
        s.files.update(batch.files)
        _merge(s.replicas, batch.replicas)

    def publish_stats(self, stats_json: str) -> None:
        self.stats_json = stats_json


_K = TypeVar("_K")
_V = TypeVar("_V")


def _merge(into: dict[_K, _V], updates: dict[_K, _V | None]) -> None:
    """Apply a batch's updates to one table: a value is set, ``None`` deletes."""
    for key, value in updates.items():
        if value is None:
            into.pop(key, None)
        else:
            into[key] = value
