"""The transactions-log grammar, and a log made by the pure core read back as a run (no processes)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest

from kubevine import report, txformat
from kubevine.ids import ClientId, TaskId, WorkerId
from kubevine.manager.core import Core
from kubevine.manager.txlog import TxLog
from kubevine.protocol import AttemptResult, Outcome, TaskRef, TaskSpec, WorkerInfo
from kubevine.report import html as report_html
from kubevine.resources import Resources

C = ClientId("c1")


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", 'a "quoted" word', "key=value", "", "tab\there", "ünïcode ✓", "-x"],
)
def test_any_value_survives_quoting_and_parsing(value: str) -> None:
    line = f"123456 m1 TASK 7 failed cause={txformat.q(value)} attempt=2"
    e = txformat.parse_line(line)
    assert e.fields["cause"] == value and e.fields["attempt"] == "2"


def test_none_is_written_as_a_dash_and_read_as_missing() -> None:
    e = txformat.parse_line(f"1 m TASK 1 waiting category={txformat.q(None)}")
    assert e.fields["category"] == "-" and e.get("category") is None


@pytest.mark.parametrize("bad", ["", "12 m TASK", "notatime m TASK 1 done", "1 m BOGUS 1 done"])
def test_lines_outside_the_grammar_are_refused(bad: str) -> None:
    with pytest.raises(txformat.LineError):
        txformat.parse_line(bad)


def test_a_torn_last_line_is_skipped_unless_strict() -> None:
    lines = ["1000000 m TASK 1 waiting cores=1", '2000000 m TASK 1 failed cause="unterminated']
    assert [e.event for e in txformat.parse_lines(lines)] == ["waiting"]
    with pytest.raises(json.JSONDecodeError):
        list(txformat.parse_lines(lines, strict=True))


def test_the_stdout_echo_writes_json_objects_with_typed_fields(tmp_path: Path) -> None:
    out = io.StringIO()
    log = TxLog(tmp_path / "tx.log", "mgr-1", echo=out, echo_json=True)
    log.write(
        [
            "TASK 5 done attempt=1 worker=w1 cause=success wall=0.25 exit=0",
            'WORKER 007 disconnected cause="silent for 31.0s" tasks=2',
        ]
    )
    log.close()
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert objs[0]["kind"] == "TASK" and objs[0]["subject"] == "5" and objs[0]["event"] == "done"
    assert objs[0]["attempt"] == 1 and objs[0]["wall"] == 0.25 and objs[0]["worker"] == "w1"
    assert objs[1]["cause"] == "silent for 31.0s" and objs[1]["manager"] == "mgr-1"
    # the file has the same events, as text
    assert [e.event for e in txformat.read(tmp_path / "tx.log")] == ["done", "disconnected"]


# ------------------------------------------------------------------ a run made by the pure core


def _worker(core: Core, wid: str, cores: float) -> WorkerId:
    info = WorkerInfo(
        worker_id=WorkerId(wid), node="n1", host="h", pid=1, resources=Resources(cores=cores, memory=1000)
    )
    core.worker_connected(info)
    return info.worker_id


def _cycle(core: Core, log: TxLog) -> None:
    core.schedule()
    core.take()
    log.write(core.transactions)
    core.transactions.clear()


def _end(core: Core, wid: WorkerId, tid: int, outcome: Outcome = Outcome.SUCCESS, wall: float = 0.5) -> None:
    t = core.tasks[TaskId(tid)]
    ref = TaskRef(task_id=TaskId(tid), attempt=t.attempt)
    result = AttemptResult(
        task_id=TaskId(tid), attempt=t.attempt, outcome=outcome, wall_time=wall, started=core.now - wall
    )
    core.worker_update(wid, [ref], [result], [])


def test_a_log_written_by_the_core_rebuilds_attempts_retries_and_lost_workers(tmp_path: Path) -> None:
    core = Core(now=1000.0)
    log = TxLog(tmp_path / "tx.log", "m1")
    a, b = _worker(core, "wa", 2), _worker(core, "wb", 1)
    kinds = {1: "odd", 2: "even", 3: "odd"}
    specs = [TaskSpec(id=TaskId(i), command="true", category=kinds[i], retries=1) for i in kinds]
    core.submit(C, specs, [None] * 3)
    _cycle(core, log)
    placed = {tid: t.worker for tid, t in core.tasks.items()}
    assert sorted(placed.values()) == ["wa", "wa", "wb"]
    on_a = [tid for tid, w in placed.items() if w == a]
    on_b = [tid for tid, w in placed.items() if w == b]
    core.now = 1001.0
    _end(core, a, on_a[0])  # succeeds
    _end(core, a, on_a[1], Outcome.EXIT_NONZERO)  # fails, retried
    _cycle(core, log)
    core.now = 1002.0
    core.worker_lost(b, "silent for 31.0s")  # its task goes back to ready
    _cycle(core, log)
    core.now = 1003.0
    for tid, t in list(core.tasks.items()):
        if t.worker is not None and t.state.value in ("dispatched", "running"):
            _end(core, t.worker, tid)
    _cycle(core, log)
    log.close()

    run = report.load(tmp_path / "tx.log")
    assert set(run.tasks) == {1, 2, 3}
    assert all(t.state == "done" for t in run.tasks.values())
    retried = run.tasks[on_a[1]]
    assert [x.outcome for x in retried.attempts] == ["exit_nonzero", "success"]
    lost = run.tasks[on_b[0]]
    assert [x.outcome for x in lost.attempts] == ["lost", "success"]
    assert lost.attempts[0].worker == "wb"
    assert {t.category for t in run.tasks.values()} == {"odd", "even"}
    spans = {s.id: s for s in run.spans}
    assert spans["wb"].disconnected is not None and spans["wb"].cause == "silent for 31.0s"
    # the state counts at the end: all done
    assert run.states[-1][1]["done"] == 3 and sum(run.states[-1][1].values()) == 3


def test_bars_that_run_at_once_get_their_own_lanes() -> None:
    lines = []
    for tid, (start, wall) in enumerate([(0.0, 2.0), (0.5, 1.0), (1.6, 1.0), (2.5, 0.5)], start=1):
        end_us = int((10 + start + wall) * 1e6)
        lines += [
            f"{int(10e6)} m TASK {tid} waiting cores=1",
            f"{int((10 + start) * 1e6)} m TASK {tid} dispatched attempt=1 worker=w cause=placed",
            f"{end_us} m TASK {tid} done attempt=1 worker=w cause=success started={10 + start} wall={wall}",
        ]
    lines.sort(key=lambda line: int(line.split()[0]))
    run = report.build(txformat.parse_lines(lines))
    lanes = report.layout(run)
    assert lanes.rows["w"] == (0, 2)  # never more than two at once
    bars = sorted(run.attempts(), key=lambda a: a.task)
    assert [a.lane for a in bars] == [0, 1, 1, 0]
    for lane in (0, 1):
        mine = sorted((a.start or 0, a.end or 0) for a in bars if a.lane == lane)
        assert all(x[1] <= y[0] + 1e-9 for x, y in itertools.pairwise(mine))


def test_the_state_series_shows_tasks_finishing_over_time() -> None:
    lines = [
        "1000000 m MANAGER m started workflow=wf",
        "1000000 m TASK 1 waiting cores=1",
        "1000000 m TASK 1 ready attempt=0 worker=- cause=submitted",
        "1000000 m TASK 2 waiting cores=1",
        "1000000 m TASK 2 ready attempt=0 worker=- cause=submitted",
        "2000000 m TASK 1 dispatched attempt=1 worker=w cause=placed",
        "3000000 m TASK 1 done attempt=1 worker=w cause=success",
        "4000000 m TASK 2 dispatched attempt=1 worker=w cause=placed",
        "5000000 m TASK 2 failed attempt=1 worker=w cause=exit_nonzero",
    ]
    run = report.build(txformat.parse_lines(lines))
    assert run.workflow == "wf" and run.duration == 4.0
    times, series = report.state_series(run, points=5)
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert series["ready"] == [2, 1, 1, 0, 0]
    assert series["done"] == [0, 0, 1, 1, 1]
    assert series["failed"] == [0, 0, 0, 0, 1]
    assert report.summary(run) == "2 tasks (1 done, 1 failed) on 1 workers in 4.0 s"


def test_library_starts_on_workers_become_spans() -> None:
    lines = [
        "1000000 m LIBRARY hep registered mode=fork slots=4",
        "1000000 m WORKER w1 connected node=n cores=4",
        "1500000 m LIBRARY hep installing worker=w1",
        "2500000 m LIBRARY hep ready worker=w1",
        "3000000 m LIBRARY broken installing worker=w1",
        "3200000 m LIBRARY broken failed worker=w1",
        "4000000 m LIBRARY hep evicted worker=w1 for=other",
    ]
    run = report.build(txformat.parse_lines(lines))
    spans = [(s.name, s.start, s.end, s.outcome) for s in run.library_spans]
    assert spans == [("hep", 1.5, 2.5, "ready"), ("broken", 3.0, 3.2, "failed")]


@pytest.mark.parametrize(
    "lines",
    [[], ["1000000 m MANAGER m started workflow=wf port=1"], ["1000000 m WORKER w connected cores=1"]],
    ids=["empty", "manager only", "a worker and no task"],
)
def test_a_run_with_nothing_to_draw_still_gives_a_picture_and_a_page(
    lines: list[str], tmp_path: Path
) -> None:
    log = tmp_path / "tx.log"
    log.write_text("".join(line + "\n" for line in lines))
    run = report.load(log)
    for name in ("run.png", "run.html"):
        assert report.render(run, tmp_path / name).stat().st_size > 1000


def test_the_log_knows_every_task_state_of_the_lifecycle() -> None:
    from kubevine.manager.states import TaskState

    assert tuple(s.value for s in TaskState) == txformat.TASK_STATES


def test_a_manager_restart_shows_in_the_run_and_its_page(tmp_path: Path) -> None:
    lines = [
        "1000000 m1 MANAGER m1 started workflow=wf port=1",
        "1000000 m1 WORKER w connected cores=1",
        "1000000 m1 TASK 1 waiting cores=1",
        "1000000 m1 TASK 1 ready attempt=0 worker=- cause=submitted",
        "1100000 m1 TASK 1 dispatched attempt=1 worker=w cause=placed",
        "1200000 m1 TASK 1 running attempt=1 worker=w cause=started",
        "3000000 m2 MANAGER m2 started workflow=wf port=1",
        "3000000 m2 MANAGER m2 restored tasks=1 workers=1",
        "3500000 m2 WORKER w connected cores=1 running=1",
        "4000000 m2 TASK 1 done attempt=1 worker=w cause=success started=1.2 wall=2.8",
    ]
    run = report.build(txformat.parse_lines(lines))
    assert [m for _, m in run.managers] == ["m1", "m2"]
    assert [(s.connected, s.disconnected, s.cause) for s in run.spans] == [
        (1.0, 3.0, "manager restarted"),
        (3.5, None, None),
    ]
    t = run.tasks[1]
    assert t.state == "done" and len(t.attempts) == 1  # it ran through the restart
    assert t.attempts[0].start == 1.2 and t.attempts[0].end == 4.0
    page = report_html.render(run, tmp_path / "run.html")
    assert page["restarts"] == [2.0]
