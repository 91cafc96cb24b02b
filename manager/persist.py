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

While the store is unreachable the writer keeps the merged batch and retries with
backoff; the loop keeps scheduling from memory (``lag`` tells how far behind it is).
A fenced write (another manager took over) is fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubevine.manager.store import StateStore, StoreError, WriteBatch

log = logging.getLogger(__name__)

GATHER = 0.003  # seconds the writer waits for more batches before a write (under load)


def merge(into: WriteBatch, b: WriteBatch) -> None:
    """Fold a later batch into an earlier one (later writes win; deletions stick)."""
    into.specs.update(b.specs)
    into.records.update(b.records)
    into.results.update(b.results)
    into.workers.update(b.workers)
    into.meta.update(b.meta)
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

    def __init__(self, store: StateStore, wake: Callable[[], None]) -> None:
        self.store = store
        self._wake = wake
        self._in: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self.fatal: StoreError | None = None
        self.pending_since: float | None = None  # when the oldest unwritten batch was queued
        self._queued = 0
        self._lock = threading.Lock()
        self._sync = not store.durable  # an in-memory store is applied inline
        self._thread: threading.Thread | None = None
        if not self._sync:
            self._thread = threading.Thread(target=self._run, name="kubevine-persist", daemon=True)
            self._thread.start()

    def submit(self, batch: WriteBatch, after: list[Any]) -> None:
        if not batch and not after:
            return
        if self._sync:
            if batch:
                self.store.apply(batch)
            if after:
                self._out.put(after)
            return
        with self._lock:
            if self._queued == 0:
                self.pending_since = time.monotonic()
            self._queued += 1
        self._in.put(_Job(batch, after))

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

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is written (used at shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queued and self.fatal is None and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        if self._thread is not None:
            self._in.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.05
        while True:
            job = self._in.get()
            if job is None:
                return
            time.sleep(GATHER)  # let a few cycles' batches gather: one write for all of them
            jobs = [job]
            while True:  # group commit: take everything that queued up meanwhile
                try:
                    nxt = self._in.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._in.put(None)
                    break
                jobs.append(nxt)
            batch = WriteBatch()
            after: list[Any] = []
            for j in jobs:
                merge(batch, j.batch)
                after += j.after
            while True:
                try:
                    if batch:
                        self.store.apply(batch)
                    backoff = 0.05
                    break
                except StoreError as e:
                    if "fenced" in str(e):
                        log.error("state store: %s", e)
                        self.fatal = e
                        self._wake()
                        return
                    log.warning("state store unavailable (%s); retrying in %.2fs", e, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
            with self._lock:
                self._queued -= len(jobs)
                self.pending_since = time.monotonic() if self._queued else None
            if after:
                self._out.put(after)
            self._wake()
