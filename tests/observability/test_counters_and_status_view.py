"""Performance counters, their Prometheus form and the status screen, without a manager."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubevine import txformat
from kubevine.cli import statusview
from kubevine.ids import CacheName, TaskId
from kubevine.manager.metrics import Counters, StatusCollector
from kubevine.manager.txlog import TxLog
from kubevine.protocol import Assignment, AttemptResult, FileBinding, FileKind, Outcome, StageIn, TaskSpec
from kubevine.resources import Resources
from kubevine.stats import Failure, LibraryView, ManagerStatus, WorkerStatus


def _status(counters: Counters) -> ManagerStatus:
    w = WorkerStatus(
        id="node-a-1234-abcd",
        node="node-a",
        host="h",
        state="connected",
        resources=Resources(cores=4, memory=8000),
        committed=Resources(cores=3, memory=3000),
        running=2,
        queued=1,
        cached_files=5,
    )
    return ManagerStatus(
        workflow="wf",
        manager_id="m1",
        address="h:9123",
        durable=True,
        time=1100.0,
        started=1000.0,
        tasks={"ready": 4, "running": 2, "dispatched": 1, "done": 10, "failed": 1},
        totals={"submitted": 18, "done": 10, "failed": 1, "cancelled": 0, "retried": 2},
        workers=[w],
        recent_failures=[
            Failure(task_id=TaskId(9), outcome="exit_nonzero", exit_code=3, error="bad\nno file")
        ],
        perf=counters.perf(cores_total=4, cores_in_use=3),
        libraries=[
            LibraryView(
                name="hep",
                mode="fork",
                slots=4,
                instances={"ready": 2, "installing": 1},
                active_calls=5,
                waiting_calls=7,
            )
        ],
    )


def _counted() -> Counters:
    c = Counters()
    kind = FileKind.BUFFER
    inputs = [FileBinding(cache_name=CacheName(n), remote_name=n, kind=kind) for n in ("f0", "f1")]
    spec = TaskSpec(id=TaskId(1), command="true", inputs=inputs)
    staged = [StageIn(cache_name=CacheName("f0"), sources=[])]
    c.dispatch([Assignment(spec=spec, attempt=1, stage=staged), Assignment(spec=spec, attempt=1)])
    walls = [0.003, 0.02, 0.02, 0.7, 4000.0]
    c.attempts_ended(
        AttemptResult(task_id=TaskId(i), attempt=1, outcome=Outcome.SUCCESS, wall_time=w)
        for i, w in enumerate(walls)
    )
    c.transfer("manager", 1000)
    c.transfer("peer", 250)
    return c


def test_counters_fill_a_cumulative_histogram_and_cache_figures() -> None:
    c = _counted()
    h = c.histogram()
    assert h.count == 5 and abs(h.sum - 4000.743) < 1e-9
    at = dict(zip(h.bounds, h.cumulative))
    assert at[0.005] == 1 and at[0.025] == 3 and at[1.0] == 4 and at[1800.0] == 4  # one above every bound
    assert (c.cache_hits, c.cache_misses) == (3, 1)
    assert c.transfer_bytes == {"peer": 250, "manager": 1000, "url": 0}


def test_rates_come_from_the_difference_between_samples() -> None:
    c = Counters()
    c.sample(100.0)
    c.dispatched, c.completed = 50, 20
    c.sample(102.0)
    p = c.perf(1, 1)
    assert (p.dispatch_rate, p.complete_rate, p.sampled) == (25.0, 10.0, 102.0)


def test_the_prometheus_form_of_a_snapshot() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: _status(_counted())))
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    wf = ("workflow", "wf")
    assert samples[("kubevine_tasks", (("state", "ready"), wf))] == 4
    assert samples[("kubevine_tasks", (("state", "cancelled"), wf))] == 0
    assert samples[("kubevine_tasks_finished_total", (("state", "done"), wf))] == 10
    assert samples[("kubevine_task_wall_seconds_bucket", (("le", "0.025"), wf))] == 3
    assert samples[("kubevine_task_wall_seconds_bucket", (("le", "+Inf"), wf))] == 5
    assert samples[("kubevine_transfer_bytes_total", (("source", "peer"), wf))] == 250
    assert samples[("kubevine_cores_in_use", (wf,))] == 3
    assert samples[("kubevine_workers_connected", (wf,))] == 1


def test_no_snapshot_yet_means_no_metrics_rather_than_an_error() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: None))
    assert generate_latest(registry) == b""


def test_the_status_screen_shows_counts_workers_and_failures() -> None:
    text = statusview.render(_status(_counted()))
    assert "workflow wf" in text and "up 1m40s" in text and "state in redis" in text
    assert "ready 4" in text and "running 2" in text and "done 10" in text
    assert "submitted 18" in text
    assert "node-a-1234-abcd" in text and "3/4" in text and "3000/8000" in text
    assert "task 9: exit_nonzero exit 3  no file" in text
    assert "manager 1.0 kB in 1 files" in text and "75% hits" in text
    width = max(len(line) for line in text.splitlines())
    assert width <= 140, f"a {width}-column line"


def test_byte_and_time_units_read_naturally() -> None:
    assert statusview.human_bytes(512) == "512 B"
    assert statusview.human_bytes(1500) == "1.5 kB"
    assert statusview.human_seconds(59) == "59s"
    assert statusview.human_seconds(3725) == "1h02m"


def test_libraries_show_their_instances_and_calls() -> None:
    st = _status(_counted())
    text = statusview.render(st)
    assert "libraries 1" in text
    assert "hep (fork, 4 slots): 1 installing, 2 ready; calls 5 active, 7 waiting" in text
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: st))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    instances = families["kubevine_library_instances"].samples
    got = {(s.labels["library"], s.labels["state"]): s.value for s in instances}
    assert got == {("hep", "installing"): 1, ("hep", "ready"): 2}
    calls = {s.labels["state"]: s.value for s in families["kubevine_library_calls"].samples}
    assert calls == {"active": 5, "waiting": 7}


def test_an_idle_manager_does_not_repeat_its_performance_line(tmp_path: Path) -> None:
    log = TxLog(tmp_path / "tx.log", "m1")
    st = _status(_counted())
    log.perf(st)
    log.perf(st)  # nothing changed
    busier = st.model_copy(update={"tasks": {**st.tasks, "done": 11}})
    log.perf(busier)
    log.close()
    perf = [e for e in txformat.read(tmp_path / "tx.log") if e.event == "perf"]
    assert [e.num("done") for e in perf] == [10, 11]
    assert perf[0].num("cores_in_use") == 3 and perf[0].num("bytes_peer") == 250
