"""One contract, two stores: what the manager writes, it reads back after a restart.

The same tests run against the in-memory store and the Redis store (the machine's real
Redis on 127.0.0.1:6379).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kubevine import keys
from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.redis_store import RedisStore
from kubevine.manager.store import (
    LeaseHeld,
    MemoryStore,
    StateStore,
    StoreError,
    StoreWiped,
    TaskRecord,
    WriteBatch,
)
from kubevine.protocol import ClientResult, LibrarySpec, Outcome, TaskSpec, WorkerInfo
from kubevine.resources import Resources


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, redis_url: str, workflow_name: str) -> Iterator[type]:
    def make() -> StateStore:
        if request.param == "memory":
            return shared.setdefault("m", MemoryStore())
        return RedisStore(redis_url, workflow_name)

    shared: dict[str, StateStore] = {}
    yield make  # type: ignore[misc]


def batch_with_everything() -> WriteBatch:
    b = WriteBatch()
    b.specs[TaskId(1)] = (TaskSpec(id=TaskId(1), command="echo 1", resources=Resources(cores=2)), None)
    b.specs[TaskId(2)] = (TaskSpec(id=TaskId(2), kind="python"), b"\x80pickled\x00bytes")  # type: ignore[arg-type]
    b.records[TaskId(1)] = TaskRecord(ClientId("c"), "running", 1, 0, 0, WorkerId("w1"), 7)
    b.records[TaskId(2)] = TaskRecord(ClientId("c"), "done", 1, 0, 0, WorkerId("w1"), 8)
    b.results[TaskId(2)] = (
        ClientResult(task_id=TaskId(2), state="done", attempts=1, outcome=Outcome.SUCCESS, output_frame=0),
        [b"\x00binary output\xff", b""],
    )
    b.workers[WorkerId("w1")] = WorkerInfo(
        worker_id=WorkerId("w1"), node="n", host="h", pid=3, resources=Resources(cores=4)
    )
    b.meta["next_task_id"] = "1000001"
    return b


def test_what_is_applied_is_loaded_back(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.acquire("m1", 10)
    s.apply(batch_with_everything())
    snap = make_store().load()
    assert snap.specs[TaskId(1)][0].resources.cores == 2
    assert snap.specs[TaskId(2)][1] == b"\x80pickled\x00bytes"
    assert snap.records[TaskId(1)] == TaskRecord(ClientId("c"), "running", 1, 0, 0, WorkerId("w1"), 7)
    res, frames = snap.results[TaskId(2)]
    assert res.outcome == Outcome.SUCCESS and frames == [b"\x00binary output\xff", b""]
    assert snap.workers[WorkerId("w1")].resources.cores == 4
    assert snap.meta["next_task_id"] == "1000001"


def test_a_snapshot_does_not_change_when_the_store_is_written_after_it(make_store) -> None:  # type: ignore[no-untyped-def]
    """A restarted manager (and a replay of its events) reads the state as it was loaded."""
    s = make_store()
    s.acquire("m1", 10)
    s.apply(batch_with_everything())
    snap = s.load()
    later = WriteBatch()
    later.meta["next_task_id"] = "2000001"
    later.deleted = {TaskId(1)}
    later.workers[WorkerId("w2")] = WorkerInfo(
        worker_id=WorkerId("w2"), node="n", host="h", pid=4, resources=Resources(cores=1)
    )
    s.apply(later)
    assert snap.meta["next_task_id"] == "1000001"
    assert TaskId(1) in snap.specs and TaskId(1) in snap.records
    assert list(snap.workers) == [WorkerId("w1")]
    assert s.load().meta["next_task_id"] == "2000001"


def test_deleted_tasks_and_departed_workers_are_gone(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.acquire("m1", 10)
    s.apply(batch_with_everything())
    b = WriteBatch()
    b.deleted = {TaskId(2)}
    b.workers[WorkerId("w1")] = None
    s.apply(b)
    snap = s.load()
    assert TaskId(2) not in snap.specs and TaskId(2) not in snap.records and TaskId(2) not in snap.results
    assert TaskId(1) in snap.records and not snap.workers


def test_libraries_files_replicas_and_collected_results(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.acquire("m1", 10)
    b = batch_with_everything()
    b.libraries["L"] = (LibrarySpec(name="L", functions=["f"]), b"\x80code")
    b.libraries["gone"] = (LibrarySpec(name="gone", functions=["g"]), b"x")
    b.files[CacheName("file-1")] = b"\x00contents\xff"
    b.replicas[(WorkerId("w1"), CacheName("file-1"))] = "node-a:/cache"
    b.replicas[(WorkerId("w1"), CacheName("temp-9"))] = "node-a:/cache"
    s.apply(b)
    later = WriteBatch()
    later.libraries["gone"] = None
    later.replicas[(WorkerId("w1"), CacheName("temp-9"))] = None
    later.collected = {TaskId(2)}  # the client has the result; the task is kept
    s.apply(later)
    snap = make_store().load()
    assert snap.libraries == {"L": (LibrarySpec(name="L", functions=["f"]), b"\x80code")}
    assert snap.files == {CacheName("file-1"): b"\x00contents\xff"}
    assert snap.replicas == {(WorkerId("w1"), CacheName("file-1")): "node-a:/cache"}
    assert TaskId(2) not in snap.results and TaskId(2) in snap.records and TaskId(2) in snap.specs


def test_a_reseed_replaces_everything_and_restores_an_emptied_store(  # type: ignore[no-untyped-def]
    make_store,
) -> None:
    s = make_store()
    epoch = s.acquire("m1", 10)
    s.apply(batch_with_everything())
    full = WriteBatch(reseed=True)
    full.specs[TaskId(5)] = (TaskSpec(id=TaskId(5), command="echo 5"), None)
    full.records[TaskId(5)] = TaskRecord(ClientId("c"), "ready", 0, 0, 0, None, 1)
    s.apply(full)
    snap = make_store().load()
    assert set(snap.records) == {TaskId(5)} and not snap.results and not snap.workers
    if isinstance(s, RedisStore):  # Redis restarted without persistence: the store is empty
        s.r.delete(*[k for k in keys.all_keys(s.workflow)])
        with pytest.raises(StoreWiped):
            s.apply(batch_with_everything())
        with pytest.raises(StoreWiped):
            s.renew("m1", 10)
        s.apply(full)  # writes the epoch and the lease back
        assert int(s.r.get(keys.epoch(s.workflow)) or 0) == epoch
        assert s.r.get(keys.lease(s.workflow)) == b"m1"
        s.apply(batch_with_everything())  # and ordinary writes go on
        s.renew("m1", 10)
        assert set(s.load().records) == {TaskId(1), TaskId(2), TaskId(5)}


def test_a_large_batch_lands_whole(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.acquire("m1", 10)
    b = WriteBatch()
    for i in range(3000):
        b.specs[TaskId(i)] = (TaskSpec(id=TaskId(i), command=f"echo {i}"), None)
        b.records[TaskId(i)] = TaskRecord(ClientId("c"), "ready", 0, 0, 0, None, i)
    s.apply(b)
    snap = s.load()
    assert len(snap.records) == 3000 and snap.specs[TaskId(2999)][0].command == "echo 2999"


def test_tasks_are_read_in_slices_and_by_id_as_load_reads_them(make_store) -> None:  # type: ignore[no-untyped-def]
    """What a restore in slices reads: the head alone, every task from a scan (a task may come
    twice, none is missed), the named ones, and the count."""
    s = make_store()
    s.acquire("m1", 10)
    b = batch_with_everything()
    for i in range(3, 2003):
        b.specs[TaskId(i)] = (TaskSpec(id=TaskId(i), command=f"echo {i}"), None)
        b.records[TaskId(i)] = TaskRecord(ClientId("c"), "ready", 0, 0, 0, None, i)
    s.apply(b)
    reader = make_store()
    whole = reader.load()
    assert reader.count_tasks() == 2002
    head = reader.load_head()
    assert not head.specs and not head.records and not head.results
    assert head.workers == whole.workers and head.meta == whole.meta
    seen: dict[TaskId, object] = {}
    cursor, reads = 0, 0
    while True:
        cursor, part = reader.scan_tasks(cursor, 300)
        reads += 1
        assert set(part.specs) == set(part.records)
        for tid in part.specs:
            seen[tid] = (part.specs[tid], part.records[tid], part.results.get(tid))
        if cursor == 0:
            break
    assert reads > 2  # in slices, not at once
    # a task deleted while the scan goes on moves nothing: every task present throughout comes
    cursor, part = reader.scan_tasks(0, 300)
    gone = next(iter(part.specs))
    d = WriteBatch()
    d.deleted.add(gone)
    s.apply(d)
    again = set(part.specs)
    while cursor:
        cursor, part = reader.scan_tasks(cursor, 300)
        again |= set(part.specs)
    assert again >= set(whole.specs) - {gone}
    assert seen == {t: (whole.specs[t], whole.records[t], whole.results.get(t)) for t in whole.specs}
    named = reader.load_tasks([TaskId(2), TaskId(77), TaskId(99999)])  # 99999 is not stored
    assert sorted(named.specs) == [TaskId(2), TaskId(77)] and list(named.results) == [TaskId(2)]
    assert named.results[TaskId(2)][1] == [b"\x00binary output\xff", b""]


def test_a_second_manager_is_refused_while_the_lease_is_live(make_store) -> None:  # type: ignore[no-untyped-def]
    first, second = make_store(), make_store()
    e1 = first.acquire("m1", 10)
    with pytest.raises(LeaseHeld):
        second.acquire("m2", 10)
    first.release("m1")
    assert second.acquire("m2", 10) > e1


def test_renewing_before_the_lease_is_taken_is_no_outage(redis_url: str, workflow_name: str) -> None:
    """A manager waiting for its predecessor's lease to run out starts its keeper thread
    first: a renewal then is nothing to do, not a failed Redis call (it logged "state store
    unavailable" and counted an outage)."""
    first, second = RedisStore(redis_url, workflow_name), RedisStore(redis_url, workflow_name)
    first.acquire("m1", 10)
    second.renew("m2", 10)  # no error, and the lease stays where it is
    with pytest.raises(LeaseHeld):
        second.acquire("m2", 10)
    first.renew("m1", 10)


def test_a_fenced_manager_cannot_write(redis_url: str, workflow_name: str) -> None:
    old, new = RedisStore(redis_url, workflow_name), RedisStore(redis_url, workflow_name)
    old.acquire("old", 0.2)
    import time

    deadline = time.monotonic() + 5
    while True:  # the old lease expires (its holder "paused")
        try:
            new.acquire("new", 10)
            break
        except LeaseHeld:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with pytest.raises(StoreError, match="fenced"):
        old.apply(batch_with_everything())
    with pytest.raises(StoreError, match="lease lost"):
        old.renew("old", 10)
    assert not new.load().records


def test_the_redis_url_password_never_reaches_messages() -> None:
    with pytest.raises(StoreError) as e:
        RedisStore("redis://:sekret@127.0.0.1:1/0", "x").acquire("m", 1)
    assert "sekret" not in str(e.value)
    with pytest.raises(StoreError) as e:
        RedisStore("redis://127.0.0.1:1/0?password=sekret&db=0", "x").acquire("m", 1)
    assert "sekret" not in str(e.value) and "password=***" in str(e.value)


def test_group_commit_merges_later_over_earlier_and_a_reseed_over_everything() -> None:
    from kubevine.manager.persist import merge

    into = batch_with_everything()
    later = WriteBatch()
    later.collected = {TaskId(2)}
    later.records[TaskId(1)] = TaskRecord(ClientId("c"), "done", 1, 0, 0, WorkerId("w1"), 7)
    merge(into, later)
    assert TaskId(2) not in into.results and into.collected == {TaskId(2)}
    assert into.records[TaskId(1)].state == "done"
    full = WriteBatch(reseed=True)
    full.meta["next_task_id"] = "5"
    merge(into, full)
    assert into.reseed and not into.specs and not into.records and not into.collected
    assert into.meta == {"next_task_id": "5"}


def test_a_writer_thread_that_fails_is_fatal_not_silent(redis_url: str, workflow_name: str) -> None:
    from kubevine.manager.persist import Persister
    from kubevine.testing import wait_for

    s = RedisStore(redis_url, workflow_name)
    s.acquire("m1", 10)
    p = Persister(s, lambda: None, owner="m1", lease_ttl=10)
    try:
        b = WriteBatch()
        b.meta["broken"] = object()  # type: ignore[assignment]  # cannot be packed: a bug
        p.submit(b, [])
        wait_for(lambda: p.fatal is not None, timeout=10, what="the writer to report its failure")
        assert "state store writer failed" in str(p.fatal)
    finally:
        p.close()
        s.close()


def test_a_wipe_does_not_let_an_old_manager_write_under_a_reused_epoch(
    redis_url: str, workflow_name: str
) -> None:
    import redis

    old, new = RedisStore(redis_url, workflow_name), RedisStore(redis_url, workflow_name)
    assert old.acquire("old", 10) == 1
    redis.Redis.from_url(redis_url).delete(keys.epoch(workflow_name), keys.lease(workflow_name))  # a wipe
    assert new.acquire("new", 10) == 1  # the same epoch number again
    with pytest.raises(StoreError, match="fenced"):
        old.apply(batch_with_everything())
    assert not new.load().records


def test_files_beyond_a_commits_budget_are_left_out_and_a_rejection_is_fatal(
    redis_url: str, workflow_name: str
) -> None:
    import redis

    from kubevine.manager.store import StoreRejected

    s = RedisStore(redis_url, workflow_name)
    s.acquire("m1", 10)
    s.max_commit_file_bytes = 10
    b = WriteBatch()
    b.files[CacheName("a")] = b"123456"
    b.files[CacheName("b")] = b"1234567"  # would pass the budget: left out
    b.files[CacheName("c")] = b"1234"
    s.apply(b)
    assert s.load().files == {"a": b"123456", "c": b"1234"}
    redis.Redis.from_url(redis_url).set(keys.records(workflow_name), "not a hash")
    with pytest.raises(StoreRejected, match="WRONGTYPE"):  # not an outage: no retry for ever
        s.apply(batch_with_everything())
    s.close()


def test_a_write_redis_rejects_stops_the_writer_instead_of_retrying(
    redis_url: str, workflow_name: str
) -> None:
    import redis

    from kubevine.manager.persist import Persister
    from kubevine.testing import wait_for

    s = RedisStore(redis_url, workflow_name)
    s.acquire("m1", 10)
    redis.Redis.from_url(redis_url).set(keys.records(workflow_name), "not a hash")
    p = Persister(s, lambda: None, owner="m1", lease_ttl=10)
    try:
        p.submit(batch_with_everything(), [])
        wait_for(lambda: p.fatal is not None, timeout=10, what="the writer to give up on the rejected write")
        assert "rejected the write" in str(p.fatal) and "WRONGTYPE" in str(p.fatal)
    finally:
        p.close()
        s.close()
