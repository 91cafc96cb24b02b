"""The scheduler core with many workers and deep queues: the index of workers with room, the
budget of one scheduling pass, silence judged after the backlog is read, status kept as tasks
move. Behaviour only (what goes where, what is counted), never timings."""

from __future__ import annotations

from test_scheduler_core import cycle, dispatched, finish, spec

from kubevine.ids import ClientId, TaskId, WorkerId
from kubevine.manager import status
from kubevine.manager.core import Core, Settings
from kubevine.manager.events import Clock, Tick
from kubevine.manager.metrics import Counters
from kubevine.manager.states import RUNNING_STATES, WAITING_STATES
from kubevine.protocol import AttemptResult, Outcome, TaskRef, TaskSpec, WorkerInfo
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


def test_a_pass_places_at_most_its_budget_and_the_next_pass_goes_on_in_priority_order() -> None:
    core = Core(Settings(prefetch=0, pass_placements=3))
    core.client_connected(C)
    for i in range(10):
        worker(core, f"w{i}")
    core.submit(C, [spec(i, priority=i) for i in range(1, 9)], [None] * 8)
    first = sorted(t for ts in dispatched(cycle(core)).values() for t in ts)
    assert first == [6, 7, 8]  # the three highest priorities
    assert core.behind  # more is ready and there is room: the service schedules again at once
    second = sorted(t for ts in dispatched(cycle(core)).values() for t in ts)
    assert second == [3, 4, 5]
    third = sorted(t for ts in dispatched(cycle(core)).values() for t in ts)
    assert third == [1, 2]
    assert not core.behind
    assert len({w for w, t in ((t.worker, t) for t in core.tasks.values())}) == 8  # one per worker


def test_a_worker_freed_among_a_thousand_full_ones_gets_the_next_task() -> None:
    core = Core(Settings(prefetch=0, pass_placements=2000))
    core.client_connected(C)
    ids = [worker(core, f"w{i}") for i in range(1000)]
    core.submit(C, [spec(i) for i in range(1, 1101)], [None] * 1100)
    out = dispatched(cycle(core))
    assert sum(map(len, out.values())) == 1000 and set(out) == set(ids)
    assert dispatched(cycle(core)) == {}  # every worker is full
    w500 = ids[500]
    finish(core, w500, out[w500][0])
    assert dispatched(cycle(core)) == {w500: [1001]}


def test_a_task_that_fits_only_a_worker_with_fewer_free_cores_goes_there() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    for i in range(100):
        worker(core, f"big{i}", cores=8, memory=1000)
    small = worker(core, "small", cores=1, memory=64000)
    big = TaskSpec(id=TaskId(1), command="true", resources=Resources(cores=1, memory=32000))
    core.submit(C, [big], [None])
    assert dispatched(cycle(core)) == {small: [1]}


def test_a_worker_heard_before_the_managers_backlog_is_not_declared_lost() -> None:
    core = Core(Settings(prefetch=0, heartbeat_timeout=5), now=100.0)
    w = worker(core, "w")
    core.handle(Clock(110.0))  # the service was busy for 10 s: its backlog was last read empty at 104
    core.handle(Tick(heard_until=104.0))
    assert w in core.workers
    core.handle(Tick(heard_until=106.0))  # everything up to 106 was read: the worker said nothing
    assert w not in core.workers


def test_nothing_is_placed_on_a_worker_that_drains_or_is_lost_even_when_it_had_room() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    a, b, c = worker(core, "a", cores=4), worker(core, "b", cores=2), worker(core, "c", cores=1)
    core.drain([a])
    core.worker_lost(b, "test")
    core.submit(C, [spec(1), spec(2)], [None] * 2)
    assert dispatched(cycle(core)) == {c: [1]}


def _walked(core: Core, states: frozenset[object]) -> tuple[int, float, int]:
    ts = [t for t in core.tasks.values() if t.state in states]
    return len(ts), sum(t.spec.resources.cores for t in ts), sum(t.spec.resources.memory for t in ts)


def shape(i: int) -> Resources:
    return Resources(cores=1 + i % 2, memory=100 * i)


def test_the_status_totals_follow_every_move_of_every_task() -> None:
    core = Core(Settings(prefetch=0, heartbeat_timeout=5), now=0.0)
    core.client_connected(C)
    a, b = worker(core, "a", cores=4, memory=4000), worker(core, "b", cores=2, memory=4000)
    specs = [TaskSpec(id=TaskId(i), command="true", resources=shape(i), retries=1) for i in range(1, 21)]
    core.submit(C, specs, [None] * len(specs))

    def check() -> None:
        st = status.snapshot(
            core,
            Counters(),
            core.now,
            workflow="w",
            manager_id="m",
            address="",
            durable=False,
            started=0.0,
            recent_failures=[],
            store_outage=0.0,
            refusing_work=False,
            with_workers=False,
        )
        n, cores, memory = _walked(core, WAITING_STATES)
        assert (st.waiting.tasks, st.waiting.cores, st.waiting.memory) == (n, cores, memory)
        n, cores, memory = _walked(core, RUNNING_STATES)
        assert (st.running.tasks, st.running.cores, st.running.memory) == (n, cores, memory)
        waiting = [t.spec.resources for t in core.tasks.values() if t.state in WAITING_STATES]
        assert st.largest_waiting.memory == max((r.memory for r in waiting), default=0)
        assert st.workers == []

    check()
    out = dispatched(cycle(core))
    check()
    ta = out[a][0]
    t = core.tasks[TaskId(ta)]
    core.worker_update(  # one fails (it retries), one succeeds, b's are lost with b
        a,
        [TaskRef(task_id=TaskId(ta), attempt=t.attempt)],
        [AttemptResult(task_id=TaskId(ta), attempt=t.attempt, outcome=Outcome.EXIT_NONZERO, exit_code=1)],
        [],
    )
    check()
    finish(core, a, out[a][1])
    check()
    core.worker_lost(b, "test")
    check()
    core.cancel(C, [TaskId(20)])
    check()
    core.results_acked(C, [TaskId(i) for i in range(1, 21)])
    check()


def test_queued_specs_share_their_repeated_parts_and_still_serialise_as_sent() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    sent = [TaskSpec(id=TaskId(i), command=f"echo {i}", resources=Resources(cores=1)) for i in (1, 2)]
    wire = [s.model_dump_json() for s in sent]
    core.submit(C, [TaskSpec.model_validate_json(j) for j in wire], [None, None])
    a, b = core.tasks[TaskId(1)].spec, core.tasks[TaskId(2)].spec
    assert a.resources is b.resources and a.inputs is b.inputs
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__
    assert [a.model_dump_json(), b.model_dump_json()] == wire
    before = set(b.__pydantic_fields_set__)
    changed = a.model_copy(update={"outputs": [], "tag": "x"})  # how the manager changes a spec
    assert changed.tag == "x" and b.tag is None and b.outputs == []
    assert changed.__pydantic_fields_set__ is not b.__pydantic_fields_set__
    assert b.__pydantic_fields_set__ == before


def test_a_worker_that_says_hello_again_before_its_dispatch_arrives_costs_the_task_no_loss() -> None:
    """During a registration storm a worker's hello goes unanswered for a while and its session
    says hello again on a new socket; a dispatch sent to the old one never arrives. Requeued as
    often as that happens, the task must not be failed as lost with its worker."""
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    info = WorkerInfo(worker_id=WorkerId("w"), node="n", host="h", pid=1, resources=Resources(cores=1))
    core.worker_connected(info)
    core.submit(C, [spec(1)], [None])
    for _ in range(10):
        assert dispatched(cycle(core)) == {"w": [1]}
        core.worker_connected(info)  # hello again, holding nothing
    t = core.tasks[TaskId(1)]
    assert t.state.value == "ready" and t.lost == 0
    finish_out = dispatched(cycle(core))
    assert finish_out == {"w": [1]}
    finish(core, WorkerId("w"), 1)
    assert core.tasks[TaskId(1)].state.value == "done"
