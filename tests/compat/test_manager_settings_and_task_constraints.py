"""TaskVine's manager settings (m.tune) and per-task constraints, as its manual and tests mean
them, against real managers and workers: wait-for-workers, peer transfers off, max-library-retries,
t.hostname/t.addrport, set_time_start/set_time_end, set_max_forsaken, add_feature, strict inputs
(fixed location), and TaskVine's metric names on /metrics (an ImportError when prometheus_client
is missing)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kubevine as vine
from kubevine import LocalCluster
from kubevine.protocol import Outcome
from kubevine.testing import wait_for

from .conftest import drain


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Local clusters with settings a TaskVine-style Manager() does not take (stopped afterwards)."""
    started: list[LocalCluster] = []

    def start(**kw: Any) -> LocalCluster:
        c = LocalCluster(workdir=tmp_path / f"cluster{len(started)}", **kw)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.stop()


def join(m: vine.Manager, workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker joining a TaskVine-style manager as TaskVine's test drivers start them."""
    env = {k: v for k, v in os.environ.items() if k != "KUBEVINE_TOKEN"}  # found by its port
    cmd = [sys.executable, "-m", "kubevine", "--log-level", "WARNING", "worker", "localhost", str(m.port)]
    return subprocess.Popen([*cmd, "--cores", "1", "--workdir", str(workdir), *args], env=env)


def stop(*workers: subprocess.Popen[bytes]) -> None:
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(30)


def test_wait_for_workers_dispatches_nothing_until_that_many_joined(manager, tmp_path: Path) -> None:
    m = manager(port=0)
    assert m.tune("wait-for-workers", 2) == 0
    tasks = [vine.Task(f"echo {i}") for i in range(2)]
    for t in tasks:
        m.submit(t)
    first = join(m, tmp_path / "w1")
    second = None
    try:
        wait_for(lambda: len(m.status().workers) == 1, timeout=30, what="the first worker")
        st = m.status()  # a scheduling cycle ran with the worker there: still nothing dispatched
        assert st.waiting.tasks == 2 and st.running.tasks == 0 and st.perf.dispatched == 0
        second = join(m, tmp_path / "w2")
        assert sorted(t.output for t in drain(m)) == ["0\n", "1\n"]
    finally:
        stop(first, *([second] if second else []))


def test_with_peer_transfers_disabled_workers_never_fetch_from_each_other(manager) -> None:
    m = manager(workers=2)
    m.disable_peer_transfers()
    temp = m.declare_temp()
    make = vine.Task("seq 1 1000 > out")
    make.add_output(temp, "out")
    m.submit(make)
    assert m.wait(60) is make and make.successful()
    readers = []
    for _ in range(6):
        t = vine.Task("wc -l < in")
        t.add_input(temp, "in")
        t.add_input(m.declare_buffer(b"data\n"), "buf")
        m.submit(t)
        readers.append(t)
    drain(m)
    assert all(t.output == "1000\n" for t in readers), [t.error for t in readers]
    assert {t.worker for t in readers} == {make.worker}  # read where the temp is
    assert m.status().perf.transfers.get("peer", 0) == 0


def test_hostname_and_addrport_name_the_worker_that_ran_the_task(manager) -> None:
    m = manager(workers=1)
    t = vine.Task("true")
    m.submit(t)
    assert m.wait(60) is t
    (w,) = m.status().workers
    assert t.hostname == w.host == socket.gethostname()
    host, _, port = (t.addrport or "").rpartition(":")
    assert host and port.isdigit(), t.addrport


def test_a_task_that_cannot_start_before_its_end_time_ends_with_max_end_time(manager) -> None:
    m = manager(workers=1)
    busy = vine.Task("sleep 60")
    m.submit(busy)
    wait_for(lambda: m.stats.tasks_running == 1, timeout=30)
    late = vine.Task("echo never")
    late.set_time_end((time.time() + 2) * 1e6)
    m.submit(late)
    assert m.wait(30) is late
    assert late.result == "max end time" and late.outcome == Outcome.MAX_END_TIME and late.output != "never\n"
    m.cancel_by_task_id(busy.id)
    drain(m)


def test_a_task_is_not_dispatched_before_its_start_time(manager) -> None:
    m = manager(workers=1)
    start = time.time() + 3
    t = vine.Task("date +%s.%N")
    t.set_time_start(start * 1e6)
    m.submit(t)
    assert m.wait(60) is t and t.successful()
    assert float(t.output) >= start


def test_max_forsaken_ends_a_task_whose_worker_was_lost_as_forsaken(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    c = cluster_factory(workers=1, heartbeat_timeout=3.0)
    with vine.Manager(c.address, token=c.token) as m:
        t = vine.Task("sleep 60")
        t.set_max_forsaken(0)
        m.submit(t)
        wait_for(lambda: m.stats.tasks_running == 1, timeout=30)
        c.workers[0].send_signal(signal.SIGKILL)
        assert m.wait(60) is t
        assert t.result == "forsaken" and t.outcome == Outcome.FORSAKEN, (t.result, t.error)


def test_an_input_no_worker_can_get_forsakes_the_task_max_forsaken_times_then_it_is_forsaken(
    manager, tmp_path: Path
) -> None:
    m = manager(workers=1)
    bad = m.declare_url(f"file://{tmp_path}/never-there")
    t = vine.Task("wc -l infile")
    t.add_input(bad, "infile")
    t.set_max_forsaken(1)
    plain = vine.Task("wc -l infile")  # without max_forsaken: input missing, as before
    plain.add_input(bad, "infile")
    m.submit(t)
    m.submit(plain)
    drain(m)
    assert (t.result, t.exit_code) == ("forsaken", -1), (t.result, t.error)
    assert plain.result == "input missing"


def test_a_task_with_a_feature_runs_only_on_a_worker_that_has_it(manager, tmp_path: Path) -> None:
    m = manager(port=0)
    plain = join(m, tmp_path / "plain", "--worker-id", "plain")
    special = join(m, tmp_path / "special", "--worker-id", "special", "--feature", "gpu-x")
    try:
        wait_for(lambda: len(m.status().workers) == 2, timeout=30, what="two workers")
        tasks = [vine.Task(f"echo {i}") for i in range(4)]
        for t in tasks:
            t.add_feature("gpu-x")
            m.submit(t)
        nowhere = vine.Task("echo never")
        nowhere.add_feature("quantum")
        m.submit(nowhere)
        got = [m.wait(60) for _ in tasks]
        assert all(t is not None and t.successful() for t in got)
        assert {t.worker for t in tasks} == {"special"}
        assert m.status().unschedulable == 1  # no worker has "quantum": it waits for one
        m.cancel_by_task_id(nowhere.id)
        drain(m)
    finally:
        stop(plain, special)


def test_a_strict_input_runs_where_the_file_is_and_fails_where_no_worker_has_it(manager) -> None:
    m = manager(workers=2)
    temp = m.declare_temp()
    make = vine.Task("seq 1 5 > out")
    make.add_output(temp, "out")
    m.submit(make)
    assert m.wait(60) is make and make.successful()
    readers = []
    for _ in range(4):
        t = vine.Task("wc -l < in")
        t.add_input(temp, "in", strict_input=True)
        m.submit(t)
        readers.append(t)
    missing = vine.Task("cat in")
    missing.add_input(m.declare_buffer(b"only the manager has me"), "in", strict_input=True)
    m.submit(missing)
    drain(m)
    assert all(t.output == "5\n" for t in readers) and {t.worker for t in readers} == {make.worker}
    assert missing.outcome == Outcome.FIXED_LOCATION_MISSING and not missing.successful()


def crash(x: int) -> int:
    os._exit(3)  # takes its library process down with it (direct mode)


def test_a_library_that_keeps_crashing_is_removed_after_max_library_retries(manager) -> None:
    m = manager(workers=1)
    assert m.tune("max-library-retries", 2) == 0
    lib = m.create_library_from_functions("crashing", crash, exec_mode="direct", add_env=False)
    m.install_library(lib)
    calls = [vine.FunctionCall("crashing", "crash", i) for i in range(10)]
    for c in calls:
        m.submit(c)
    got = drain(m, timeout=120)  # every call comes back: none waits for a library that is gone
    assert len(got) == 10 and not any(c.successful() for c in calls)
    wait_for(  # its second crash was its last: the template is dropped
        lambda: "crashing" not in [lib.name for lib in m.status().libraries],
        timeout=30,
        what="the library to be removed",
    )
    late = vine.FunctionCall("crashing", "crash", 0)
    m.submit(late)
    assert m.wait(30) is late and late.result == "missing library"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_metrics_carry_taskvines_names_beside_kubevines(manager) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = manager(port=0, prometheus=port)
    assert m.prometheus_port == port
    text = scrape(port)
    for name in ("vine_tasks_waiting", "vine_workers_connected", "vine_tasks_submitted", "vine_total_cores"):
        assert f"# TYPE {name} gauge" in text and f"# HELP {name}" in text, name
    assert "kubevine_tasks{" in text  # kubevine's own names are still there
    m.submit(vine.Task("/bin/true"))  # no worker: it waits
    wait_for(
        lambda: any(
            line.startswith("vine_tasks_waiting{") and line.endswith(" 1.0")
            for line in scrape(port).splitlines()
        ),
        timeout=30,
        what="vine_tasks_waiting to count the task",
    )


def test_metrics_asked_for_without_prometheus_client_is_an_import_error_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real = builtins.__import__

    def without_prometheus_client(name: str, *args: Any, **kw: Any) -> Any:
        if name == "prometheus_client":
            raise ImportError("no prometheus_client here")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", without_prometheus_client)
    import kubevine.prometheus  # noqa: F401  (TaskVine's module name exists)

    with pytest.raises(ImportError, match="prometheus_client"):
        vine.Manager(port=0, prometheus=9)
