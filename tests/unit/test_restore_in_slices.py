"""A large store restored in slices while the manager serves (``Restored(whole=False)``,
``TasksRestored``, ``RestoreDone``): the hazards of serving before every task is loaded, on
the pure core with a :class:`MemoryStore` (no sockets, no Redis)."""

from __future__ import annotations

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager import events
from kubevine.manager.core import Core, Settings
from kubevine.manager.instructions import SendDispatch, SendKill, SendWelcome
from kubevine.manager.states import TaskState
from kubevine.manager.store import MemoryStore, Snapshot, TaskRecord
from kubevine.protocol import AttemptResult, FileBinding, FileKind, Outcome, TaskRef, TaskSpec, WorkerInfo
from kubevine.resources import Resources

C = ClientId("c")
S = TaskState


def winfo(wid: str, running: list[TaskRef] | None = None, cores: float = 2) -> WorkerInfo:
    res = Resources(cores=cores, memory=1000, disk=1000)
    held = running or []
    return WorkerInfo(worker_id=WorkerId(wid), node="n", host="h", pid=1, resources=res, running=held)


def store_of(snap: Snapshot) -> MemoryStore:
    store = MemoryStore()
    store._snap = snap  # what an earlier manager left
    return store


def stored(n: int, first: int = 1) -> Snapshot:
    snap = Snapshot()
    for i in range(first, first + n):
        snap.specs[TaskId(i)] = (TaskSpec(id=TaskId(i), command=f"echo {i}"), None)
        snap.records[TaskId(i)] = TaskRecord(C, "ready", 0, 0, 0, None, i)
    snap.meta["next_task_id"] = "1000001"
    return snap


def begin(core: Core, store: MemoryStore) -> None:
    core.handle(events.Restored(store.load_head(), whole=False))


def load_all(core: Core, store: MemoryStore, size: int = 3) -> None:
    cursor = 0
    while True:
        cursor, part = store.scan_tasks(cursor, size)
        core.handle(events.TasksRestored(part))
        if cursor == 0:
            break
    core.handle(events.RestoreDone())


def placed(out: list[object]) -> list[int]:
    return [int(t.spec.id) for i in out if isinstance(i, SendDispatch) for t in i.tasks]


def test_work_is_dispatched_from_the_first_slice_and_all_of_it_by_the_end() -> None:
    store = store_of(stored(20))
    core = Core(Settings(prefetch=0))
    begin(core, store)
    core.worker_connected(winfo("w", cores=100))
    cursor, part = store.scan_tasks(0, 5)
    core.handle(events.TasksRestored(part))
    core.schedule()
    _, out = core.take()
    assert len(placed(out)) == 5 and cursor != 0  # dispatched before the rest was read
    while cursor:
        cursor, part = store.scan_tasks(cursor, 5)
        core.handle(events.TasksRestored(part))
    core.handle(events.RestoreDone())
    core.schedule()
    _, out = core.take()
    assert len(placed(out)) == 15 and core.restoring is None


def test_the_same_state_as_a_whole_restore() -> None:
    """Every state an earlier manager could leave, restored whole and in slices of 2."""
    snap = stored(6)
    w = WorkerId("w")
    snap.records[TaskId(2)] = TaskRecord(C, "dispatched", 1, 0, 0, w, 2)
    snap.records[TaskId(3)] = TaskRecord(C, "running", 1, 0, 0, WorkerId("gone"), 3)
    snap.records[TaskId(4)] = TaskRecord(C, "waiting", 0, 0, 0, None, 4)
    snap.records[TaskId(5)] = TaskRecord(C, "retrying", 2, 1, 0, None, 5)
    snap.workers[w] = winfo("w")
    whole = Core()
    whole.restore(store_of(snap).load())
    sliced = Core()
    store = store_of(snap)
    begin(sliced, store)
    load_all(sliced, store, size=2)
    for core in (whole, sliced):
        core.client_connected(C)
        core.submit(C, [TaskSpec(id=TaskId(1000001), command="new")], [None])
    assert {t: (e.state, e.worker) for t, e in whole.tasks.items()} == {
        t: (e.state, e.worker) for t, e in sliced.tasks.items()
    }
    assert sorted(whole.ready) == sorted(sliced.ready)
    # a task submitted after the restore comes after every stored one, as with a whole restore
    assert sliced.tasks[TaskId(1000001)].seq > max(e.seq for t, e in sliced.tasks.items() if t < 1000)


def test_a_client_is_welcomed_once_every_task_is_loaded_and_its_welcome_lists_them_all() -> None:
    store = store_of(stored(10))
    core = Core()
    begin(core, store)
    core.handle(events.ClientConnected(C, True))  # attach: it wants its tasks back
    core.handle(events.ClientConnected(ClientId("gone"), False))
    core.handle(events.ClientLeft(ClientId("gone")))
    cursor, part = store.scan_tasks(0, 4)
    core.handle(events.TasksRestored(part))
    _, out = core.take()
    assert not [i for i in out if isinstance(i, SendWelcome)]  # it would list 4 of its 10
    while cursor:
        cursor, part = store.scan_tasks(cursor, 4)
        core.handle(events.TasksRestored(part))
    core.handle(events.RestoreDone())
    _, out = core.take()
    welcomes = [i for i in out if isinstance(i, SendWelcome)]
    assert [w.client for w in welcomes] == [C]  # the one that left is not welcomed
    assert sorted(int(s.id) for s in welcomes[0].tasks) == list(range(1, 11))


def test_a_task_on_a_worker_that_came_back_without_it_is_run_again() -> None:
    """The service loads what a hello names before the core reads it; a task of that worker
    loaded later was not named, so the worker no longer has it."""
    snap = stored(4)
    w = WorkerId("w")
    snap.workers[w] = winfo("w")
    snap.records[TaskId(1)] = TaskRecord(C, "running", 1, 0, 0, w, 1)
    snap.records[TaskId(4)] = TaskRecord(C, "running", 1, 0, 0, w, 4)
    store = store_of(snap)
    core = Core(Settings(prefetch=0))
    begin(core, store)
    held = [TaskRef(task_id=TaskId(1), attempt=1)]
    core.handle(events.TasksRestored(store.load_tasks([TaskId(1)])))  # what the hello names
    core.worker_connected(winfo("w", running=held))
    load_all(core, store)
    assert core.tasks[TaskId(1)].state == S.RUNNING and core.tasks[TaskId(1)].worker == w
    assert core.tasks[TaskId(4)].state == S.READY and core.tasks[TaskId(4)].worker is None
    assert core.tasks[TaskId(4)].lost == 1  # a loss with its worker, as at its hello
    _, out = core.take()
    assert not [i for i in out if isinstance(i, SendKill)]
    core.worker_update(w, [], [AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS)], [])
    assert core.tasks[TaskId(1)].state == S.DONE


def test_a_task_forgotten_during_the_load_does_not_come_back_from_its_slice() -> None:
    snap = stored(3)
    snap.records[TaskId(2)] = TaskRecord(C, "done", 1, 0, 0, None, 2)
    store = store_of(snap)
    core = Core()
    begin(core, store)
    core.handle(events.TasksRestored(store.load_tasks([TaskId(2)])))  # named by a worker, say
    core.life.forget(core.tasks[TaskId(2)])  # its result reached its client
    load_all(core, store)  # the store still has it: its deletion waits in the persister
    assert TaskId(2) not in core.tasks and sorted(core.tasks) == [TaskId(1), TaskId(3)]
    assert core.counts[S.DONE] == 0


def test_a_consumer_loaded_before_its_finished_producer_has_the_lost_temp_made_again() -> None:
    temp = CacheName("temp-x")
    snap = Snapshot()
    inp = FileBinding(cache_name=temp, remote_name="i", kind=FileKind.TEMP)
    out = FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)
    snap.specs[TaskId(1)] = (TaskSpec(id=TaskId(1), command="use i", inputs=[inp]), None)
    snap.records[TaskId(1)] = TaskRecord(C, "waiting", 0, 0, 0, None, 1)
    snap.specs[TaskId(2)] = (TaskSpec(id=TaskId(2), command="make o", outputs=[out]), None)
    snap.records[TaskId(2)] = TaskRecord(C, "done", 1, 0, 0, WorkerId("w"), 2)  # no copy known
    store = store_of(snap)
    core = Core()
    begin(core, store)
    core.handle(events.TasksRestored(store.load_tasks([TaskId(1)])))
    core.handle(events.TasksRestored(store.load_tasks([TaskId(2)])))
    assert core.tasks[TaskId(2)].state == S.DONE  # not judged before every task is known
    core.handle(events.RestoreDone())
    assert core.tasks[TaskId(2)].state == S.READY and core.tasks[TaskId(2)].rerun
    assert core.tasks[TaskId(1)].state == S.WAITING


def test_a_scan_that_returns_a_task_twice_loads_it_once() -> None:
    store = store_of(stored(3))
    core = Core()
    begin(core, store)
    part = store.load_tasks([TaskId(1), TaskId(2), TaskId(3)])
    core.handle(events.TasksRestored(part))
    core.handle(events.TasksRestored(part))
    core.handle(events.RestoreDone())
    assert core.counts[S.READY] == 3 and len(core.ready) == 3
