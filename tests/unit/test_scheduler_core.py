"""The scheduler core, driven without sockets: events in, instructions out."""

from __future__ import annotations

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.core import Core, Settings
from kubevine.manager.instructions import (
    ClientError,
    SendDispatch,
    SendDrain,
    SendInstall,
    SendKill,
    SendRemove,
    SendResults,
)
from kubevine.manager.states import TaskState
from kubevine.protocol import AttemptResult, FileBinding, FileKind, Outcome, TaskRef, TaskSpec, WorkerInfo
from kubevine.resources import Resources

C = ClientId("c1")


def worker(core: Core, wid: str, cores: float = 1, memory: int = 1000) -> WorkerId:
    info = WorkerInfo(
        worker_id=WorkerId(wid),
        node="n",
        host="h",
        pid=1,
        resources=Resources(cores=cores, memory=memory, disk=1000),
    )
    core.worker_connected(info)
    return info.worker_id


def spec(i: int, cores: float = 1, **kw: object) -> TaskSpec:
    return TaskSpec(id=TaskId(i), command="true", resources=Resources(cores=cores), **kw)  # type: ignore[arg-type]


def cycle(core: Core) -> list[object]:
    core.schedule()
    _, out = core.take()
    return list(out)


def dispatched(out: list[object]) -> dict[str, list[int]]:
    d: dict[str, list[int]] = {}
    for ins in out:
        if isinstance(ins, SendDispatch):
            d.setdefault(ins.worker, []).extend(a.spec.id for a in ins.tasks)
    return d


def finish(core: Core, wid: WorkerId, tid: int, outcome: Outcome = Outcome.SUCCESS, code: int = 0) -> None:
    t = core.tasks[TaskId(tid)]
    core.worker_update(
        wid,
        [TaskRef(task_id=TaskId(tid), attempt=t.attempt)],
        [AttemptResult(task_id=TaskId(tid), attempt=t.attempt, outcome=outcome, exit_code=code)],
        [],
    )


def results(out: list[object]) -> dict[int, str]:
    r: dict[int, str] = {}
    for ins in out:
        if isinstance(ins, SendResults):
            for res, _ in ins.results:
                r[res.task_id] = res.state
    return r


def test_tasks_go_to_the_emptiest_worker_and_back_to_their_client() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    a, b = worker(core, "a"), worker(core, "b")
    core.submit(C, [spec(1), spec(2), spec(3)], [None] * 3)
    out = cycle(core)
    assert sorted(t for ts in dispatched(out).values() for t in ts) == [1, 2]  # one core each, no prefetch
    assert {k: len(v) for k, v in dispatched(out).items()} == {a: 1, b: 1}
    finish(core, a, dispatched(out)[a][0])
    out = cycle(core)
    assert dispatched(out) == {a: [3]}
    assert list(results(out).values()) == ["done"]


def test_a_two_core_task_never_shares_a_two_core_worker() -> None:
    core = Core(Settings(prefetch=0))
    w = worker(core, "w", cores=2)
    core.submit(C, [spec(1, cores=2), spec(2, cores=2), spec(3, cores=1)], [None] * 3)
    out = cycle(core)
    assert dispatched(out) == {w: [1]}
    finish(core, w, 1)
    assert dispatched(cycle(core)) == {w: [2]}


def test_short_tasks_are_queued_ahead_on_a_busy_worker() -> None:
    core = Core(Settings(prefetch=1))
    w = worker(core, "w", cores=1)
    core.submit(C, [spec(i) for i in range(1, 6)], [None] * 5)
    assert dispatched(cycle(core)) == {w: [1]}  # nothing known about run times yet
    finish(core, w, 1)  # a short task (wall time 0)
    assert dispatched(cycle(core)) == {w: [2, 3]}  # one to run, one queued


def test_long_tasks_are_not_queued_ahead() -> None:
    core = Core(Settings(prefetch=3))
    w = worker(core, "w", cores=1)
    core.submit(C, [spec(i) for i in range(1, 6)], [None] * 5)
    cycle(core)
    t = core.tasks[TaskId(1)]
    core.worker_update(
        w,
        [],
        [AttemptResult(task_id=TaskId(1), attempt=t.attempt, outcome=Outcome.SUCCESS, wall_time=5.0)],
        [],
    )
    assert dispatched(cycle(core)) == {w: [2]}


def test_a_task_larger_than_every_worker_is_unschedulable_and_blocks_nothing() -> None:
    core = Core(Settings(prefetch=0))
    w = worker(core, "w", cores=2)
    core.submit(C, [spec(1, cores=64, priority=10), spec(2)], [None, None])
    out = cycle(core)
    assert dispatched(out) == {w: [2]}
    assert core.unschedulable == {TaskId(1)}
    assert core.tasks[TaskId(1)].state == TaskState.READY
    # a big enough worker arrives: the task runs there
    big = worker(core, "big", cores=64)
    assert dispatched(cycle(core)) == {big: [1]}
    assert not core.unschedulable


def test_higher_priority_runs_first() -> None:
    core = Core(Settings(prefetch=0))
    w = worker(core, "w")
    core.submit(C, [spec(1, priority=1), spec(2, priority=5), spec(3, priority=3)], [None] * 3)
    order = []
    for _ in range(3):
        (tid,) = dispatched(cycle(core))[w]
        order.append(tid)
        finish(core, w, tid)
    assert order == [2, 3, 1]


def test_retries_are_spent_on_failed_attempts_then_the_task_fails() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    w = worker(core, "w")
    core.submit(C, [spec(1, retries=2)], [None])
    for attempt in (1, 2, 3):
        assert dispatched(cycle(core)) == {w: [1]}
        assert core.tasks[TaskId(1)].attempt == attempt
        finish(core, w, 1, Outcome.EXIT_NONZERO, code=3)
    out = cycle(core)
    assert results(out) == {1: "failed"}
    t = core.tasks[TaskId(1)]
    assert t.state == TaskState.FAILED and t.result is not None and t.result.exit_code == 3
    assert [s for _, s, _ in core.story(TaskId(1))].count("retrying") == 2


def test_a_stale_result_from_a_superseded_attempt_is_rejected() -> None:
    core = Core(Settings(prefetch=0, heartbeat_timeout=5))
    core.client_connected(C)
    a = worker(core, "a")
    core.submit(C, [spec(1)], [None])
    cycle(core)
    core.worker_lost(a, "test")
    b = worker(core, "b")
    assert dispatched(cycle(core)) == {b: [1]}
    # the old attempt's result arrives late (from a worker that came back)
    worker(core, "a")
    core.worker_update(a, [], [AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS)], [])
    assert core.tasks[TaskId(1)].state == TaskState.DISPATCHED
    finish(core, b, 1)
    assert results(cycle(core)) == {1: "done"}


def test_a_silent_worker_is_lost_and_its_tasks_are_requeued() -> None:
    core = Core(Settings(prefetch=0, heartbeat_timeout=5), now=100.0)
    a = worker(core, "a")
    core.submit(C, [spec(1)], [None])
    cycle(core)
    core.tick(103.0)
    assert a in core.workers
    core.tick(106.0)
    assert a not in core.workers
    assert core.tasks[TaskId(1)].state == TaskState.READY
    b = worker(core, "b")
    assert dispatched(cycle(core)) == {b: [1]}


def test_cancel_kills_the_running_attempt_and_reports_cancelled() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    w = worker(core, "w")
    core.submit(C, [spec(1), spec(2)], [None, None])
    cycle(core)
    core.cancel(C, [TaskId(1), TaskId(2)], None)
    out = cycle(core)
    kills = [r.task_id for i in out if isinstance(i, SendKill) for r in i.tasks]
    assert kills == [1]
    assert results(out) == {1: "cancelled", 2: "cancelled"}
    assert core.workers[w].committed.cores == 0


def test_a_draining_worker_gets_nothing_new_and_is_released_when_idle() -> None:
    core = Core(Settings(prefetch=1))
    w = worker(core, "w")
    core.submit(C, [spec(0), spec(1), spec(2)], [None] * 3)
    cycle(core)
    finish(core, w, 0)  # short: queueing ahead starts
    assert dispatched(cycle(core)) == {w: [1, 2]}
    finish(core, w, 1)  # 1 is done; 2 was only queued
    core.drain([w])
    out = cycle(core)
    assert [i.worker for i in out if isinstance(i, SendDrain)] == [w]
    assert core.tasks[TaskId(2)].state == TaskState.READY  # taken back, not lost


def test_an_input_the_manager_never_received_fails_the_task_clearly() -> None:
    core = Core()
    core.client_connected(C)
    s = spec(1, inputs=[FileBinding(cache_name="file-abc", remote_name="x", kind=FileKind.LOCAL)])  # type: ignore[arg-type]
    core.submit(C, [s], [None])
    _, out = core.take()
    res = [r for i in out if isinstance(i, SendResults) for r, _ in i.results]
    assert res[0].outcome == Outcome.INPUT_MISSING and "x" in (res[0].error or "")


def test_a_task_id_of_another_client_is_refused_and_a_resubmission_is_ignored() -> None:
    core = Core()
    core.submit(C, [spec(1)], [None])
    core.submit(C, [spec(1)], [None])  # the same client again, after a reconnect: kept once
    other = ClientId("c2")
    core.submit(other, [spec(1)], [None])
    _, out = core.take()
    errs = [i for i in out if isinstance(i, ClientError)]
    assert len(errs) == 1 and errs[0].client == other
    assert errs[0].code == "duplicate_task_id" and errs[0].task_ids == [1]
    assert core.totals["submitted"] == 1


def test_acknowledged_results_are_forgotten() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    w = worker(core, "w")
    core.submit(C, [spec(1)], [None])
    cycle(core)
    finish(core, w, 1)
    cycle(core)
    core.results_acked(C, [TaskId(1)])
    batch, _ = core.take()
    assert TaskId(1) not in core.tasks and batch.deleted == {TaskId(1)}


def test_a_reconnecting_client_receives_results_it_never_acknowledged() -> None:
    core = Core(Settings(prefetch=0))
    w = worker(core, "w")
    core.submit(C, [spec(1)], [None])  # client not connected: results wait
    cycle(core)
    finish(core, w, 1)
    assert results(cycle(core)) == {}
    core.client_connected(C)
    assert results(cycle(core)) == {1: "done"}


# ---------------------------------------------------------------- libraries

from kubevine.protocol import LibrarySpec, TaskKind  # noqa: E402


def call(i: int, lib: str = "L", fn: str = "f") -> TaskSpec:
    return TaskSpec(id=TaskId(i), kind=TaskKind.CALL, library=lib, function=fn, resources=Resources(cores=0))


def lib_spec(name: str = "L", cores: float = 1, slots: int = 1) -> LibrarySpec:
    return LibrarySpec(name=name, functions=["f"], resources=Resources(cores=cores), slots=slots)


def installs(out: list[object]) -> list[WorkerId]:
    """The workers told to start a library instance."""
    return [i.worker for i in out if isinstance(i, SendInstall)]


def calls_with_one_instance_ready(core: Core, workers: int, slots: int, calls: int) -> WorkerId:
    """``calls`` calls of library L (``slots`` each instance) on 1-core workers: its first
    instance, started on the first pass, is ready. Returns that instance's worker."""
    core.client_connected(C)
    for i in range(workers):
        worker(core, f"w{i}", cores=1)
    core.install_library(C, lib_spec(slots=slots), b"code")
    core.submit(C, [call(i) for i in range(1, calls + 1)], [b""] * calls)
    (first,) = installs(cycle(core))
    core.library_status(first, "L", "ready", None)
    return first


def test_waiting_calls_start_one_library_instance_then_use_its_slots() -> None:
    core = Core()
    core.client_connected(C)
    w = worker(core, "w", cores=2)
    core.install_library(C, lib_spec(slots=2), b"code")
    core.submit(C, [call(i) for i in range(1, 6)], [b""] * 5)
    out = cycle(core)
    assert [(i.worker, i.library) for i in out if isinstance(i, SendInstall)] == [(w, "L")]
    assert dispatched(out) == {}  # nothing goes before the library is ready
    assert dispatched(cycle(core)) == {}  # and no second install while one is on its way
    core.library_status(w, "L", "ready", None)
    assert dispatched(cycle(core)) == {w: [1, 2]}  # two slots


def test_waiting_calls_start_as_many_instances_as_they_fill_once_their_length_is_known() -> None:
    """Long calls on many workers: the library starts on as many workers as the waiting calls
    need, not one worker per start-up round trip. Until a call has ended (instant calls need
    few instances, long ones many) the instances at most double per start-up."""
    core = Core()
    core.client_connected(C)
    ws = [worker(core, f"w{i}", cores=1) for i in range(10)]
    core.install_library(C, lib_spec(slots=2), b"code")
    core.submit(C, [call(i) for i in range(1, 26)], [b""] * 25)  # 25 calls, 2 slots each

    def next_installs() -> list[WorkerId]:
        return installs(cycle(core))

    first = next_installs()
    assert len(first) == 1 and not next_installs()  # one, and none more while it starts
    core.library_status(first[0], "L", "ready", None)
    second = next_installs()
    assert len(second) == 1  # 1 -> 2
    core.library_status(second[0], "L", "ready", None)
    third = next_installs()
    assert len(third) == 2  # 2 -> 4
    # a call ends after 30 s: long calls; 4 calls run, 21 wait for instances of 2: 11 more
    t = core.tasks[TaskId(1)]
    long = AttemptResult(task_id=TaskId(1), attempt=t.attempt, outcome=Outcome.SUCCESS, wall_time=30.0)
    core.worker_update(t.worker or WorkerId(""), [], [long], [])
    spread = next_installs()
    assert len(spread) == 6 and set(spread).isdisjoint([*first, *second, *third])  # every worker left
    assert set(first + second + third + spread) == set(ws)


def test_calls_cancelled_while_they_wait_start_no_instances() -> None:
    """The library's queue keeps cancelled calls until a pass pops them: instances are
    started for the calls still waiting, not for the queue's length."""
    core = Core()
    first = calls_with_one_instance_ready(core, workers=10, slots=2, calls=41)
    out = cycle(core)
    assert dispatched(out) == {first: [1, 2]}
    assert len(installs(out)) == 1  # length unknown: 1 -> 2
    core.cancel(C, [TaskId(i) for i in range(10, 42)])  # 32 of the 39 waiting
    assert sum(1 for res in results(cycle(core)).values() if res == "cancelled") == 32
    long = AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS, wall_time=30.0)
    core.worker_update(first, [], [long], [])  # long calls: as many instances as they fill
    out = cycle(core)
    assert dispatched(out) == {first: [3]}  # into the slot call 1 left
    # 6 calls wait (4..9); the instance on its way takes 2: two more, not one on every worker
    assert len(installs(out)) == 2


def test_instant_calls_that_the_running_instance_can_take_start_no_more() -> None:
    """A pass places at most its budget; calls left waiting that the ready instance has room
    for (instant calls: hundreds queue at one) are no reason to start it on other workers."""
    core = Core(Settings(pass_placements=5))
    first = calls_with_one_instance_ready(core, workers=5, slots=1, calls=100)
    out = cycle(core)
    assert dispatched(out) == {first: [1]}
    (second,) = installs(out)  # length unknown: 1 -> 2
    core.library_status(second, "L", "ready", None)
    quick = AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS, wall_time=1e-5)
    core.worker_update(first, [], [quick], [])
    for _ in range(5):
        out = cycle(core)
        assert not installs(out)
        assert sum(len(v) for v in dispatched(out).values()) == 5  # the pass's budget, to the two


def test_an_idle_library_makes_room_for_a_task_that_needs_its_cores() -> None:
    core = Core()
    core.client_connected(C)
    w = worker(core, "w", cores=1)
    core.install_library(C, lib_spec(), b"code")
    core.submit(C, [call(1)], [b""])
    cycle(core)
    core.library_status(w, "L", "ready", None)
    cycle(core)
    finish(core, w, 1)
    core.submit(C, [spec(2)], [None])
    out = cycle(core)
    assert [(i.worker, i.library) for i in out if isinstance(i, SendRemove)] == [(w, "L")]
    assert dispatched(out) == {w: [2]}


def test_a_short_task_is_not_queued_behind_an_idle_library_that_holds_the_cores() -> None:
    core = Core(Settings(prefetch=1))
    core.client_connected(C)
    w = worker(core, "w", cores=1)
    core.submit(C, [spec(1)], [None])
    cycle(core)
    finish(core, w, 1)  # recent tasks are short: queueing ahead is on
    core.install_library(C, lib_spec(), b"code")
    core.submit(C, [call(2)], [b""])
    cycle(core)
    core.library_status(w, "L", "ready", None)
    cycle(core)
    finish(core, w, 2)
    core.submit(C, [spec(3)], [None])
    out = cycle(core)  # queued there it would wait for ever: the idle library goes instead
    assert [(i.worker, i.library) for i in out if isinstance(i, SendRemove)] == [(w, "L")]
    assert dispatched(out) == {w: [3]}


def test_a_library_that_fails_to_start_twice_fails_its_calls_with_the_reason() -> None:
    core = Core()
    core.client_connected(C)
    a, b = worker(core, "a"), worker(core, "b")
    core.install_library(C, lib_spec(), b"code")
    core.submit(C, [call(1)], [b""])
    (first,) = installs(cycle(core))
    core.library_status(first, "L", "failed", "Traceback...\nImportError: no numpy")
    (second,) = installs(cycle(core))
    core.library_status(second, "L", "failed", "Traceback...\nImportError: no numpy")
    out = cycle(core)
    res = [r for i in out if isinstance(i, SendResults) for r, _ in i.results]
    assert res[0].outcome == Outcome.LIBRARY_ERROR and "no numpy" in (res[0].error or "")
    assert {first, second} == {a, b}
    core.submit(C, [call(2)], [b""])
    _, out = core.take()
    res = [r for i in out if isinstance(i, SendResults) for r, _ in i.results]
    assert "cannot start" in (res[0].error or "")


def test_a_temp_output_is_recorded_where_it_was_made_and_its_consumer_becomes_ready() -> None:
    from kubevine.protocol import CacheName

    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    a, b = worker(core, "a"), worker(core, "b")
    tmp = CacheName("temp-x")
    out = FileBinding(cache_name=tmp, remote_name="o", kind=FileKind.TEMP)
    inp = FileBinding(cache_name=tmp, remote_name="i", kind=FileKind.TEMP)
    core.submit(C, [spec(1, outputs=[out]), spec(2, inputs=[inp])], [None, None])  # type: ignore[arg-type]
    (w,) = dispatched(cycle(core))
    t = core.tasks[TaskId(1)]
    core.worker_update(
        w,
        [],
        [
            AttemptResult(
                task_id=TaskId(1),
                attempt=t.attempt,
                outcome=Outcome.SUCCESS,
                outputs=[{"remote_name": "o", "cache_name": tmp, "size": 3}],
            )
        ],
        [],  # type: ignore[list-item]
    )
    assert core.catalog.holders[tmp] == {w}
    assert core.tasks[TaskId(2)].state == TaskState.READY  # its input exists now
    assert {a, b} >= {w}


def test_a_failed_or_unneeded_transfer_gives_its_source_slot_back() -> None:
    from kubevine.protocol import TransferRecord

    core = Core(Settings(transfers_per_source=1))
    name = CacheName("file-abc")
    core.files_received([name])
    holder = worker(core, "w1")
    core.workers[holder].info.transfer_address = "127.0.0.1:1"
    core.worker_update(holder, [], [], [], cached=[name])
    other = WorkerInfo(
        worker_id=WorkerId("w2"),
        node="m",
        host="h",
        pid=2,
        resources=Resources(cores=1),
        transfer_address="x:2",
    )
    core.worker_connected(other)
    core.submit(
        C, [spec(1, inputs=[FileBinding(cache_name=name, remote_name="f", kind=FileKind.LOCAL)])], [None]
    )
    core.workers[holder].committed.add(Resources(cores=1))  # w1 is full: the task goes to w2
    assert dispatched(cycle(core)) == {"w2": [1]}
    assert core.catalog.busy("w1") == 1
    failed = TransferRecord(cache_name=name, source="peer", source_worker=WorkerId("w1"), ok=False, error="x")
    core.worker_update(WorkerId("w2"), [], [], [], transfers=[failed])
    assert core.catalog.busy("w1") == 0  # w1 serves nothing now, though w2 still fetches elsewhere


def test_a_task_with_more_inputs_on_one_peer_than_the_transfer_limit_is_dispatched() -> None:
    """The per-source limit gates a task, not each of its files: one task reading 10 files
    held by one peer (limit 4) gets all 10 staged from that peer at once."""
    core = Core(Settings(transfers_per_source=4))
    names = [CacheName(f"file-{i}") for i in range(10)]
    core.files_received(names)
    holder = worker(core, "w1")
    core.workers[holder].info.transfer_address = "127.0.0.1:1"
    core.worker_update(holder, [], [], [], cached=names)
    core.workers[holder].committed.add(Resources(cores=1))  # w1 is full: the task goes to w2
    core.worker_connected(
        WorkerInfo(
            worker_id=WorkerId("w2"),
            node="m",
            host="h",
            pid=2,
            resources=Resources(cores=1),
            transfer_address="x:2",
        )
    )
    inputs = [
        FileBinding(cache_name=n, remote_name=f"f{i}", kind=FileKind.LOCAL) for i, n in enumerate(names)
    ]
    core.submit(C, [spec(1, inputs=inputs)], [None])
    (sd,) = [o for o in cycle(core) if isinstance(o, SendDispatch)]
    (a,) = sd.tasks
    assert sd.worker == "w2" and len(a.stage) == 10
    assert all(st.sources[0].kind == "peer" and st.sources[0].worker == "w1" for st in a.stage)
    assert core.catalog.busy("w1") == 10
