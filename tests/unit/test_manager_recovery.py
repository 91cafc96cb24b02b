"""Pure-core recovery: what a restarted manager makes of a snapshot and of the workers that
come back to it (no sockets, no Redis)."""

from __future__ import annotations

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.core import Core
from kubevine.manager.instructions import SendDispatch, SendKill, SendResults
from kubevine.manager.states import TaskState
from kubevine.manager.store import MemoryStore, Snapshot, TaskRecord, WriteBatch
from kubevine.protocol import (
    AttemptResult,
    FileBinding,
    FileKind,
    LibrarySpec,
    Outcome,
    TaskKind,
    TaskRef,
    TaskSpec,
    WorkerInfo,
)
from kubevine.resources import Resources

C = ClientId("c")
W = WorkerId("w1")


def info(running: list[TaskRef] | None = None, libraries: list[str] | None = None) -> WorkerInfo:
    return WorkerInfo(
        worker_id=W,
        node="n",
        host="h",
        pid=1,
        resources=Resources(cores=2, memory=1000, disk=1000),
        running=running or [],
        libraries=libraries or [],
    )


def snapshot() -> Snapshot:
    snap = Snapshot()
    snap.specs[TaskId(1)] = (TaskSpec(id=TaskId(1), command="true"), None)
    snap.records[TaskId(1)] = TaskRecord(C, "ready", 0, 0, 0, None, 1)  # its dispatch never stored
    call = TaskSpec(id=TaskId(2), kind=TaskKind.CALL, library="L", function="f", resources=Resources(cores=0))
    snap.specs[TaskId(2)] = (call, b"args")
    snap.records[TaskId(2)] = TaskRecord(C, "ready", 0, 0, 0, None, 2)  # waits on the library
    snap.libraries["L"] = (LibrarySpec(name="L", functions=["f"], resources=Resources(cores=1)), b"code")
    snap.workers[W] = info()
    snap.meta["totals"] = '{"submitted": 7, "done": 5, "failed": 0, "cancelled": 0, "retried": 1}'
    snap.meta["next_task_id"] = "1000001"
    return snap


def test_a_worker_still_running_an_unrecorded_dispatch_keeps_it() -> None:
    core = Core()
    core.restore(snapshot())
    assert core.totals["done"] == 5 and core.next_task_id == 1000001
    assert "L" in core.libraries and core.tasks[TaskId(2)].state == TaskState.READY
    core.client_connected(C)
    core.worker_connected(info(running=[TaskRef(task_id=TaskId(1), attempt=1)], libraries=["L"]))
    core.schedule()
    _, out = core.take()
    assert not [i for i in out if isinstance(i, SendKill)]  # not killed ...
    sent = [a.spec.id for i in out if isinstance(i, SendDispatch) for a in i.tasks]
    assert TaskId(1) not in sent and TaskId(2) in sent  # ... nor run again; the call goes to L
    t = core.tasks[TaskId(1)]
    assert t.state == TaskState.DISPATCHED and t.attempt == 1 and t.worker == W
    core.worker_update(W, [], [AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS)], [])
    _, out = core.take()
    assert [r.task_id for i in out if isinstance(i, SendResults) for r, _ in i.results] == [TaskId(1)]
    assert core.totals["done"] == 6


def test_a_waiting_consumer_of_a_temp_held_by_a_known_worker_waits_for_it() -> None:
    snap = snapshot()
    temp = CacheName("temp-x")
    out = FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)
    snap.specs[TaskId(3)] = (TaskSpec(id=TaskId(3), command="make o", outputs=[out]), None)
    snap.records[TaskId(3)] = TaskRecord(C, "done", 1, 0, 0, W, 3)
    inp = FileBinding(cache_name=temp, remote_name="i", kind=FileKind.TEMP)
    snap.specs[TaskId(4)] = (TaskSpec(id=TaskId(4), command="use i", inputs=[inp]), None)
    snap.records[TaskId(4)] = TaskRecord(C, "waiting", 0, 0, 0, None, 4)
    snap.replicas[(W, temp)] = "n"
    core = Core()
    core.restore(snap)
    assert core.tasks[TaskId(3)].state == TaskState.DONE  # not made again: a copy is known
    assert core.tasks[TaskId(4)].state == TaskState.READY
    # the replica was not persisted: the producer runs again, the consumer waits for it
    del snap.replicas[(W, temp)]
    core = Core()
    core.restore(snap)
    assert core.tasks[TaskId(3)].state == TaskState.READY and core.tasks[TaskId(3)].rerun
    assert core.tasks[TaskId(4)].state == TaskState.WAITING


def test_a_temp_undeclared_before_its_result_was_acknowledged_stays_undeclared_after_a_restart() -> None:
    from kubevine.manager.core import Settings
    from kubevine.manager.store import MemoryStore

    store = MemoryStore()
    store.acquire("m1", 10.0)
    core = Core(Settings(prefetch=0))

    def persist() -> list[object]:
        batch, out = core.take()
        store.apply(batch)
        return list(out)

    core.client_connected(C)
    core.worker_connected(info())
    tmp = CacheName("temp-x")
    out = FileBinding(cache_name=tmp, remote_name="o", kind=FileKind.TEMP)
    core.submit(C, [TaskSpec(id=TaskId(1), command="true", outputs=[out])], [b"p"])
    core.schedule()
    persist()
    t = core.tasks[TaskId(1)]
    done = AttemptResult(
        task_id=TaskId(1),
        attempt=t.attempt,
        outcome=Outcome.SUCCESS,
        outputs=[{"remote_name": "o", "cache_name": tmp, "size": 3}],  # type: ignore[list-item]
    )
    core.worker_update(W, [], [done], [])
    persist()
    core.undeclare(C, [tmp])  # before the client acknowledged the producer's result
    persist()

    again = Core()
    again.restore(store.load())
    assert tmp not in again.producers  # not a producer again: it will not be re-run for it
    again.client_connected(C)
    again.results_acked(C, [TaskId(1)])
    assert TaskId(1) not in again.tasks  # forgotten once its result is in the client's hands


def test_tasks_queued_behind_a_long_task_before_a_restart_go_to_a_worker_that_idles() -> None:
    """Before the restart, short tasks made the manager queue work ahead on worker a; then a
    600 s task started there. The restarted manager must not leave the tasks queued behind it
    while worker b has nothing to do."""
    snap = Snapshot()
    for i in range(1, 5):
        snap.specs[TaskId(i)] = (TaskSpec(id=TaskId(i), command="sleep", resources=Resources(cores=1)), None)
    a, b = WorkerId("a"), WorkerId("b")
    snap.records[TaskId(1)] = TaskRecord(C, "running", 1, 0, 0, a, 1)  # the 600 s task
    for i in range(2, 5):  # queued there behind it, not started
        snap.records[TaskId(i)] = TaskRecord(C, "dispatched", 1, 0, 0, a, i)
    one_core = Resources(cores=1, memory=1000, disk=1000)
    snap.workers[a] = WorkerInfo(worker_id=a, node="n", host="h", pid=1, resources=one_core)
    core = Core(now=1000.0)
    core.restore(snap)
    core.client_connected(C)
    held = [TaskRef(task_id=TaskId(i), attempt=1) for i in range(1, 5)]
    back = WorkerInfo(worker_id=a, node="n", host="h", pid=1, resources=one_core, running=held)
    core.worker_connected(back)
    core.worker_connected(WorkerInfo(worker_id=b, node="n", host="h", pid=2, resources=one_core))
    core.worker_update(a, [TaskRef(task_id=TaskId(1), attempt=1)], [], [])  # a runs the long one
    core.tick(1001.0)
    core.schedule()
    _, out = core.take()
    to_b = [t.spec.id for i in out if isinstance(i, SendDispatch) and i.worker == b for t in i.tasks]
    assert to_b == [TaskId(2)]  # b takes the first task queued on a ...
    killed = [r.task_id for i in out if isinstance(i, SendKill) and i.worker == a for r in i.tasks]
    assert killed == [TaskId(2)]  # ... which a forgets (it never started it)
    assert core.tasks[TaskId(1)].worker == a and core.tasks[TaskId(1)].state == TaskState.RUNNING
    assert {core.tasks[TaskId(i)].worker for i in (3, 4)} == {a}  # b has one core: one task


def test_a_calls_failure_and_next_attempt_in_one_turn_are_stored_and_count_after_a_restart() -> None:
    """A call that fails and goes out again in the same turn: the store has its failure and
    its new attempt, so after a restart its worker's hello is taken back and one more failure
    uses up its retries (a store that kept only "ready" lets it retry past its limit)."""
    store = MemoryStore()
    core = Core()

    def cycle() -> tuple[WriteBatch, list[object]]:
        core.schedule()
        batch, out = core.take()
        store.apply(batch)
        return batch, list(out)

    core.client_connected(C)
    core.install_library(C, LibrarySpec(name="L", functions=["f"], resources=Resources(cores=1)), b"code")
    core.worker_connected(info())
    call = TaskSpec(
        id=TaskId(1), kind=TaskKind.CALL, library="L", function="f", resources=Resources(cores=0), retries=1
    )
    core.submit(C, [call], [b"args"])
    cycle()
    core.library_status(W, "L", "ready", None)
    cycle()
    core.worker_update(W, [], [AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.EXCEPTION)], [])
    _, out = cycle()
    assert [(a.spec.id, a.attempt) for i in out if isinstance(i, SendDispatch) for a in i.tasks] == [(1, 2)]
    stored = store.load().records[TaskId(1)]
    assert (stored.state, stored.attempt, stored.failures) == ("dispatched", 2, 1)

    core = Core()  # the manager restarted
    core.restore(store.load())
    core.client_connected(C)
    core.worker_connected(info(running=[TaskRef(task_id=TaskId(1), attempt=2)], libraries=["L"]))
    _, out = cycle()
    assert not [i for i in out if isinstance(i, (SendKill, SendDispatch))]  # kept there, not run again
    core.worker_update(W, [], [AttemptResult(task_id=TaskId(1), attempt=2, outcome=Outcome.EXCEPTION)], [])
    _, out = cycle()
    assert [(r.task_id, r.state) for i in out if isinstance(i, SendResults) for r, _ in i.results] == [
        (1, "failed")
    ]


def test_a_held_call_that_cannot_be_adopted_is_killed_and_its_next_attempt_is_numbered_past_it() -> None:
    """A worker holds attempt 1 of a call the store says is ready, but its library instance is
    gone: that attempt is killed, and the call runs again as attempt 2, never as a second
    attempt 1 (a late word of the killed one would be taken for it)."""
    core = Core()
    core.restore(snapshot())
    core.client_connected(C)
    core.worker_connected(info(running=[TaskRef(task_id=TaskId(2), attempt=1)]))  # no instance of L
    core.schedule()
    _, out = core.take()
    assert [r.attempt for i in out if isinstance(i, SendKill) for r in i.tasks if r.task_id == 2] == [1]
    core.library_status(W, "L", "ready", None)
    core.schedule()
    _, out = core.take()
    assert [
        (a.spec.id, a.attempt) for i in out if isinstance(i, SendDispatch) for a in i.tasks if a.spec.id == 2
    ] == [(2, 2)]
