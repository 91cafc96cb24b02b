"""The writer thread folds the batches that queued while it was busy into one commit, up to
MAX_COMMIT_WRITES task writes: a fast intake never becomes one huge script that holds Redis
(and everyone else who uses it) for seconds. Every batch still lands, in order, each whole."""

from __future__ import annotations

import threading

from kubevine.ids import ClientId, TaskId
from kubevine.manager import persist
from kubevine.manager.persist import Persister
from kubevine.manager.store import MemoryStore, TaskRecord, WriteBatch
from kubevine.testing import wait_for


class SlowStore(MemoryStore):
    """A durable store whose first write waits until the test lets it go."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.commits: list[list[int]] = []  # the task ids of each commit, in order

    def apply(self, batch: WriteBatch) -> None:
        self.gate.wait(10)
        self.commits.append(sorted(batch.records))
        super().apply(batch)


def batch_of(first: int, n: int) -> WriteBatch:
    b = WriteBatch()
    for i in range(first, first + n):
        b.records[TaskId(i)] = TaskRecord(ClientId("c"), "ready", 0, 0, 0, None, i)
    return b


def test_batches_queued_behind_a_slow_write_land_in_capped_commits_in_order(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(persist, "MAX_COMMIT_WRITES", 250)
    store = SlowStore()
    p = Persister(store, lambda: None, owner="m1", lease_ttl=10)
    try:
        for k in range(20):  # 20 cycles of 100 task writes, queued while the first write waits
            p.submit(batch_of(1 + 100 * k, 100), [])
        store.gate.set()
        wait_for(lambda: sum(map(len, store.commits)) == 2000, timeout=10, what="every batch written")
        assert max(map(len, store.commits)) <= 300  # capped (a batch is never split: 250 -> 300)
        assert len(store.commits) >= 7
        landed = [tid for c in store.commits for tid in c]
        assert landed == list(range(1, 2001))  # all of them, in order
    finally:
        p.close()
