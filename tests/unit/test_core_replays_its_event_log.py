"""The core takes typed events through one entry, so a run is its event log: a core that
recorded what it handled, replayed into a fresh core, reaches the same states and decides
the same instructions (and the same writes) at every cycle."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import pytest

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.core import Core, Journal, Settings, Taken, replay
from kubevine.manager.events import Clock, Tick, WorkerUpdated
from kubevine.manager.instructions import SendDispatch
from kubevine.manager.states import TaskState
from kubevine.protocol import (
    AttemptResult,
    FileBinding,
    FileKind,
    LibrarySpec,
    Outcome,
    OutputFile,
    TaskKind,
    TaskRef,
    TaskSpec,
    WorkerInfo,
)
from kubevine.resources import Resources, Tally

C = ClientId("c1")


STATE = (
    "now",
    "tasks",
    "workers",
    "libraries",
    "ready",
    "counts",
    "totals",
    "unschedulable",
    "known_files",
    "producers",
    "waiting_for",
    "undeclared",
    "undeclare_later",
    "connected_clients",
    "next_task_id",
    "avg_wall",
    "moved",
    "transactions",
)


def plain(x: Any) -> Any:
    """``x`` as values that compare by content (a resource tally compares by identity)."""
    if isinstance(x, Tally):
        return x.snapshot()
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: plain(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


def state_of(core: Core) -> dict[str, Any]:
    """Everything a core holds (its catalog too), as plain values."""
    state = {name: plain(getattr(core, name)) for name in STATE}
    state["catalog"] = {k: plain(v) for k, v in vars(core.catalog).items()}
    return state


def info(wid: str, cores: float = 1, running: list[TaskRef] | None = None) -> WorkerInfo:
    return WorkerInfo(
        worker_id=WorkerId(wid),
        node=f"node-{wid}",
        host="h",
        pid=1,
        resources=Resources(cores=cores, memory=1000, disk=1000),
        transfer_address=f"127.0.0.1:{9000 + len(wid)}",
        running=running or [],
    )


def cycle(core: Core) -> list[Any]:
    core.schedule()
    return core.take()[1]


def ended(core: Core, wid: str, tid: int, outcome: Outcome = Outcome.SUCCESS, **kw: Any) -> None:
    t = core.tasks[TaskId(tid)]
    ref = TaskRef(task_id=TaskId(tid), attempt=t.attempt)
    result = AttemptResult(task_id=TaskId(tid), attempt=t.attempt, outcome=outcome, wall_time=0.01, **kw)
    core.handle(WorkerUpdated(WorkerId(wid), started=[ref], results=[result], frames=[b"out"]))


def a_run(core: Core) -> None:
    """Submissions, workers coming and going, failures, retries, temps, a library and calls."""
    core.handle(Clock(100.0))
    core.client_connected(C)
    core.worker_connected(info("a"))
    core.worker_connected(info("b", cores=2))
    tmp = CacheName("temp-x")
    made = FileBinding(cache_name=tmp, remote_name="o", kind=FileKind.TEMP)
    used = FileBinding(cache_name=tmp, remote_name="i", kind=FileKind.TEMP)
    core.submit(
        C,
        [
            TaskSpec(id=TaskId(1), command="make o", outputs=[made]),
            TaskSpec(id=TaskId(2), command="use i", inputs=[used]),
            TaskSpec(id=TaskId(3), command="flaky", retries=1),
            TaskSpec(id=TaskId(4), command="big", resources=Resources(cores=8)),
            TaskSpec(id=TaskId(5), command="slow", priority=2),
        ],
        [b"p1", None, None, None, None],
    )
    core.install_library(C, LibrarySpec(name="L", functions=["f"], resources=Resources(cores=1)), b"code")
    call = TaskSpec(id=TaskId(6), kind=TaskKind.CALL, library="L", function="f", resources=Resources(cores=0))
    core.submit(C, [call], [b"args"])
    out = cycle(core)
    placed = {a.spec.id: i.worker for i in out if isinstance(i, SendDispatch) for a in i.tasks}
    core.handle(Clock(101.0))
    ended(core, placed[TaskId(1)], 1, outputs=[OutputFile(remote_name="o", cache_name=tmp, size=3)])
    ended(core, placed[TaskId(3)], 3, Outcome.EXIT_NONZERO, exit_code=2)  # retried
    core.library_status(WorkerId("a"), "L", "ready", None)
    cycle(core)
    core.handle(Clock(102.0))
    core.results_acked(C, [TaskId(3)])  # not final: ignored
    core.cancel(C, [TaskId(5)])
    core.worker_seen(WorkerId("b"))
    core.handle(Clock(140.0))  # a is silent past the heartbeat timeout: lost, with temp-x
    core.worker_seen(WorkerId("b"))
    core.handle(Tick())
    cycle(core)
    core.worker_connected(info("c", cores=8))  # the big task fits now
    core.drain([WorkerId("b")])
    cycle(core)
    core.handle(Clock(141.0))
    for tid, t in list(core.tasks.items()):
        if t.state in (TaskState.DISPATCHED, TaskState.RUNNING) and t.worker is not None:
            ended(core, t.worker, tid)
    cycle(core)
    core.undeclare(C, [tmp])
    core.results_acked(C, list(core.tasks))
    core.client_disconnected(C)
    cycle(core)


def test_a_replayed_run_reaches_the_same_states_and_instructions() -> None:
    core = Core(Settings(heartbeat_timeout=30.0, prefetch=1), now=99.0, record=True)
    a_run(core)
    journal = core.journal
    assert isinstance(journal, Journal)
    recorded = [e for e in journal.entries if isinstance(e, Taken)]
    assert len(recorded) == 6 and any(i for t in recorded for i in t.out)
    assert any("disconnected" in line and "silent" in line for line in core.transactions)  # a loss happened
    again, taken = replay(journal)
    assert taken == recorded  # every cycle's writes and instructions, in order
    assert state_of(again) == state_of(core)
    assert again.story(TaskId(2)) == core.story(TaskId(2)) != []


def test_a_replay_of_a_changed_log_differs() -> None:
    """The comparison is not vacuous: drop one event and the replay diverges."""
    core = Core(Settings(prefetch=1), now=99.0, record=True)
    a_run(core)
    assert core.journal is not None
    entries = core.journal.entries
    first_result = next(i for i, e in enumerate(entries) if isinstance(e, WorkerUpdated) and e.results)
    changed = Journal(
        core.journal.settings, core.journal.start, entries[:first_result] + entries[first_result + 1 :]
    )
    again, _ = replay(changed)
    assert state_of(again) != state_of(core)


def test_a_core_records_nothing_unless_asked() -> None:
    core = Core()
    core.submit(C, [TaskSpec(id=TaskId(1), command="true")], [None])
    core.take()
    assert core.journal is None


@pytest.mark.parametrize("record", [False, True])
def test_recording_changes_no_decision(record: bool) -> None:
    core = Core(Settings(prefetch=1), now=99.0, record=record)
    a_run(core)
    plain = Core(Settings(prefetch=1), now=99.0)
    a_run(plain)
    assert state_of(core) == state_of(plain)
