"""Writing state to the store without stopping the scheduler: group commit in a thread.

The scheduling loop must not wait for Redis on every cycle, yet some replies may only go
out once what they promise is durable: a worker may forget a result only after the
manager has stored it, and a block of task ids must never be handed out twice. So each
cycle's :class:`WriteBatch` goes to a writer thread together with the messages that
depend on it; the writer merges whatever batches queued up while it was busy into one
transaction, applies it, and hands the dependent messages back to the loop. Everything
else (dispatches, results to clients) is sent at once: if the manager dies before the
write lands, the worker still holds its result and reports it again, and a dispatched
task is at worst run twice, the documented at-least-once execution.

A Redis outage: the writer keeps the merged batch (later writes replace earlier ones, so
it grows with the number of tasks touched, not with time) and retries with backoff; the
loop keeps scheduling from memory. ``outage`` tells for how long the store has been
unreachable; past its bound the service refuses new work (see ``ManagerService``). When
Redis answers again the buffered batch lands in one write. If Redis came back *empty* (it
restarted without persistence) the store says so (:class:`StoreWiped`) and the loop hands
over its whole in-memory state once (a reseed) before anything else is written.

A keeper thread renews the lease and publishes stats, so a slow or absent Redis never
blocks the scheduling loop. A fenced write or a lost lease (another manager took over) is
fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubevine.manager.store import StateStore, StoreError, StoreRejected, StoreWiped, WriteBatch

log = logging.getLogger(__name__)

GATHER = 0.003  # seconds the writer waits for more batches before a write (under load)
# A group commit takes queued batches until it holds this many task writes (specs, records,
# results); the rest go in the next one. Redis runs a commit's script alone and answers no
# one else meanwhile (the operator, other workflows, a status read): during a fast 1M-task
# intake an unbounded merge made commits of hundreds of thousands of tasks and stalled it.
# One cycle's own batch is never split (it lands whole or not at all).
MAX_COMMIT_WRITES = 20_000


def _writes(b: WriteBatch) -> int:
    return len(b.specs) + len(b.records) + len(b.results)


def merge(into: WriteBatch, b: WriteBatch) -> None:
    """Fold a later batch into an earlier one (later writes win; deletions stick; a reseed
    replaces everything before it)."""
    if b.reseed:
        into.specs, into.records, into.results = {}, {}, {}
        into.deleted, into.workers, into.meta = set(), {}, {}
        into.libraries, into.files, into.replicas = {}, {}, {}
        into.collected = set()
        into.reseed = True
    into.specs.update(b.specs)
    into.records.update(b.records)
    into.results.update(b.results)
    into.workers.update(b.workers)
    into.meta.update(b.meta)
    into.libraries.update(b.libraries)
    into.files.update(b.files)
    into.replicas.update(b.replicas)
    for tid in b.collected:
        into.collected.add(tid)
        into.results.pop(tid, None)
    if b.deleted:
        into.deleted |= b.deleted
        for tid in b.deleted:
            into.specs.pop(tid, None)
            into.records.pop(tid, None)
            into.results.pop(tid, None)


@dataclass
class _Job:
    batch: WriteBatch
    after: list[Any] = field(default_factory=list)  # released once the batch is durable


class Persister:
    """Applies batches in order; ``done()`` returns what may be sent now."""

    def __init__(
        self,
        store: StateStore,
        wake: Callable[[], None],
        *,
        owner: str = "",
        lease_ttl: float = 15.0,
        stats_interval: float = 2.0,
    ) -> None:
        self.store = store
        self._wake = wake
        self._in: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self.fatal: StoreError | None = None
        self.pending_since: float | None = None  # when the oldest unwritten batch was queued
        self.down_since: float | None = None  # when the store stopped answering
        self.down_reason = ""
        self.wiped = False  # the store forgot the workflow: the loop must reseed it
        self.reseed_requested = False
        self.stats_json: str | None = None  # the latest stats, published by the keeper
        self._owner, self._ttl, self._stats_interval = owner, lease_ttl, stats_interval
        self._queued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sync = not store.durable  # an in-memory store is applied inline
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        if not self._sync:
            writer, keeper = self._guard(self._run), self._guard(self._keep)
            self._thread = threading.Thread(target=writer, name="kubevine-persist", daemon=True)
            self._thread.start()
            self._keeper = threading.Thread(target=keeper, name="kubevine-lease", daemon=True)
            self._keeper.start()

    def submit(self, batch: WriteBatch, after: list[Any]) -> None:
        if not batch and not after:
            return
        if self._sync:
            if batch:
                self.store.apply(batch)
            if after:
                self._out.put(after)
            return
        if batch.reseed:
            self.reseed_requested = True
        with self._lock:
            if self._queued == 0:
                self.pending_since = time.monotonic()
            self._queued += 1
        self._in.put(_Job(batch, after))

    def publish(self, stats_json: str) -> None:
        """Stats for the operator: published by the keeper thread (inline for memory)."""
        if self._sync:
            self.store.publish_stats(stats_json)
        else:
            self.stats_json = stats_json

    def done(self) -> list[Any]:
        """Messages whose batch is now durable, in order."""
        out: list[Any] = []
        while True:
            try:
                out += self._out.get_nowait()
            except queue.Empty:
                return out

    @property
    def lag(self) -> float:
        """Seconds the oldest batch not yet written has been waiting (0 when caught up)."""
        since = self.pending_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def outage(self) -> float:
        """Seconds the store has been unreachable (0 when it answers)."""
        since = self.down_since
        return 0.0 if since is None else time.monotonic() - since

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is written (used at shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queued and self.fatal is None and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._in.put(None)
            self._thread.join(timeout=5)
        if self._keeper is not None:
            self._keeper.join(timeout=5)

    # ------------------------------------------------------------------ health

    def _failed(self, e: StoreError) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.down_reason = str(e)
            log.warning("state store unavailable: %s; scheduling goes on from memory", e)

    def _answered(self) -> None:
        if self.down_since is not None:
            log.warning("state store answers again after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
            self.down_reason = ""

    def _lost(self, e: StoreError) -> None:
        log.error("state store: %s", e)
        self.fatal = e
        self._wake()

    # ------------------------------------------------------------------ threads

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """A thread that dies of a bug stops the manager (loudly) instead of silently
        leaving it without durability."""

        def run() -> None:
            try:
                fn()
            except Exception as e:
                log.exception("state store thread %s failed", fn.__name__)
                self._lost(StoreError(f"the state store writer failed: {e!r}"))

        return run

    def _keep(self) -> None:
        """Renew the lease every TTL/3 and publish the latest stats."""
        next_renew = time.monotonic() + self._ttl / 3
        published: str | None = None
        while not self._stop.wait(min(self._ttl / 3, self._stats_interval, 0.5)):
            now = time.monotonic()
            if now >= next_renew:
                try:
                    self.store.renew(self._owner, self._ttl)
                    self._answered()
                    next_renew = now + self._ttl / 3
                except StoreWiped as e:
                    self._answered()
                    if not self.wiped and not self.reseed_requested:
                        log.warning("%s; writing the whole workflow state again", e)
                        self.wiped = True
                        self._wake()
                    next_renew = now + 0.2
                except StoreError as e:
                    if "lease lost" in str(e):
                        self._lost(e)
                        return
                    self._failed(e)
                    next_renew = now + 0.2  # retry soon: the lease is running out
            stats = self.stats_json
            if stats is not None and stats is not published and self.down_since is None:
                self.store.publish_stats(stats)
                published = stats

    def _run(self) -> None:
        backoff = 0.05
        carried: list[Any] = []  # messages of batches dropped while waiting for a reseed
        waiting_reseed = False
        while True:
            job = self._in.get()
            if job is None:
                return
            time.sleep(GATHER)  # let a few cycles' batches gather: one write for all of them
            jobs = [job]
            writes = _writes(job.batch)
            while writes < MAX_COMMIT_WRITES:  # group commit: what queued up meanwhile, capped
                try:
                    nxt = self._in.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._in.put(None)
                    break
                jobs.append(nxt)
                writes += _writes(nxt.batch)
            batch = WriteBatch()
            after: list[Any] = carried
            carried = []
            for j in jobs:
                merge(batch, j.batch)
                after += j.after
            if waiting_reseed and not batch.reseed:
                carried = after  # the reseed to come holds this state too
                self._settled(len(jobs), [])
                continue
            while True:
                try:
                    if batch:
                        self.store.apply(batch)
                    backoff = 0.05
                    self._answered()
                    break
                except StoreWiped as e:
                    self._answered()
                    if batch.reseed:  # cannot happen: a reseed writes the epoch itself
                        self._lost(e)
                        return
                    log.warning("%s; writing the whole workflow state again", e)
                    waiting_reseed = True
                    self.wiped = True
                    self._wake()
                    break
                except StoreError as e:
                    if "fenced" in str(e) or isinstance(e, StoreRejected):
                        self._lost(e)  # retrying the identical batch cannot help
                        return
                    self._failed(e)
                    log.debug("state store unavailable (%s); retrying in %.2fs", e, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
            if waiting_reseed and not batch.reseed:
                carried = after
                self._settled(len(jobs), [])
                continue
            if batch.reseed:
                waiting_reseed = False
                self.wiped = self.reseed_requested = False
                log.warning("state store: the whole workflow state is written again")
            self._settled(len(jobs), after)

    def _settled(self, n: int, after: list[Any]) -> None:
        with self._lock:
            self._queued -= n
            self.pending_since = time.monotonic() if self._queued else None
        if after:
            self._out.put(after)
        self._wake()
