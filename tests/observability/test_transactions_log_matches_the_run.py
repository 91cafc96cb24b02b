"""A real run's transactions log tells the same story as the results the client received."""

from __future__ import annotations

import collections

from kubevine import report, txformat

from .helpers import INPUT, N_TASKS, RunResult


def test_every_line_of_a_real_run_parses(finished_run: RunResult) -> None:
    lines = finished_run.log.read_text().splitlines()
    events = list(txformat.parse_lines(lines, strict=True))
    assert len(events) == len(lines) > 5 * N_TASKS
    assert {e.kind for e in events} >= {"MANAGER", "WORKER", "TASK", "TRANSFER", "CACHE"}
    times = [e.time for e in events]
    assert times == sorted(times)  # stamped as written, in order


def test_task_lines_count_what_the_client_got(finished_run: RunResult) -> None:
    events = txformat.read(finished_run.log)
    per_event = collections.Counter(e.event for e in events if e.kind == "TASK")
    tasks = finished_run.tasks
    attempts = sum(t.attempts for t in tasks.values())
    assert per_event["waiting"] == N_TASKS  # one submission line each
    assert per_event["done"] == finished_run.successful == N_TASKS - N_TASKS // 50
    assert per_event["failed"] == finished_run.failed == N_TASKS // 50
    assert per_event["retrying"] == N_TASKS // 50  # each doomed task was retried once
    assert per_event["dispatched"] == per_event["running"] == attempts
    # and per task: its last line is the state the client saw, on the worker it saw
    last = {}
    for e in events:
        if e.kind == "TASK" and e.event in ("done", "failed"):
            last[int(e.subject)] = e
    assert set(last) == set(tasks)
    for tid, t in tasks.items():
        assert last[tid].event == t.state
        assert last[tid].get("worker") == t.worker
        assert int(last[tid].num("attempt")) == t.attempts
        assert last[tid].get("cause") == t.outcome


def test_task_lines_carry_resources_category_and_wall_time(finished_run: RunResult) -> None:
    events = txformat.read(finished_run.log)
    waiting = [e for e in events if e.kind == "TASK" and e.event == "waiting"]
    assert all(e.get("type") == "command" and e.num("cores") == 1 for e in waiting)
    categories = collections.Counter(e.get("category") for e in waiting)
    assert categories["doomed"] == N_TASKS // 50
    assert set(categories) == {"reco", "skim", "fit", "doomed"}
    done = [e for e in events if e.kind == "TASK" and e.event == "done"]
    walls = {int(e.subject): e.num("wall") for e in done}
    for tid, wall in walls.items():
        assert abs(wall - finished_run.tasks[tid].wall_time) < 1e-5


def test_workers_transfers_and_cache_inserts_are_logged(finished_run: RunResult) -> None:
    events = txformat.read(finished_run.log)
    connected = [e for e in events if e.kind == "WORKER" and e.event == "connected"]
    assert len(connected) == finished_run.workers
    assert all(e.num("cores") == 2 for e in connected)
    workers = {e.subject for e in connected}
    sent = [e for e in events if e.kind == "TRANSFER" and e.event == "sent"]
    # the one input reached each worker once, whole: first from the manager, then from
    # the manager or from a worker that had it already
    assert sorted(e.get("dest") for e in sent) == sorted(workers)
    assert all(e.num("bytes") == len(INPUT) for e in sent)
    assert sent[0].get("source") == "manager"
    assert all(e.get("source") == "manager" or e.get("peer") in workers - {e.get("dest")} for e in sent)
    inserts = [e for e in events if e.kind == "CACHE" and e.event == "insert"]
    assert {e.subject for e in inserts} == workers
    assert {e.get("file") for e in inserts} == {sent[0].subject}


def test_the_manager_logs_its_start_stop_and_performance(finished_run: RunResult) -> None:
    events = txformat.read(finished_run.log)
    manager = [e for e in events if e.kind == "MANAGER"]
    # it starts serving once (no restart in this run), and stops last
    assert [e.event for e in manager].count("started") == 1
    assert manager[0].event in ("loading", "started") and manager[-1].event == "stopped"
    perf = [e for e in manager if e.event == "perf"]
    assert perf, "no performance snapshot"
    assert perf[-1].num("submitted_total") <= N_TASKS
    dispatched = [e.num("dispatched_total") for e in perf]
    assert dispatched == sorted(dispatched)


def test_the_report_model_rebuilds_every_task_and_attempt(finished_run: RunResult) -> None:
    run = report.load(finished_run.log)
    assert set(run.tasks) == set(finished_run.tasks)
    for tid, t in finished_run.tasks.items():
        info = run.tasks[tid]
        assert info.state == t.state
        assert len(info.attempts) == t.attempts
        last = info.attempts[-1]
        assert last.worker == t.worker and last.outcome == t.outcome
        assert last.start is not None and last.end is not None and last.start <= last.end
    assert run.counts()["done"] == finished_run.successful
    moved = run.bytes_by_source()
    assert sum(moved.values()) == len(INPUT) * finished_run.workers
    assert moved["manager"] >= len(INPUT) and moved["url"] == 0
