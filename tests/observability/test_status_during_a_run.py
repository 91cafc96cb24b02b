"""``kubevine status`` against a running manager: JSON that parses and adds up, a watch mode."""

from __future__ import annotations

import json
import subprocess
import sys

from kubevine import LocalCluster, Manager, Task
from kubevine.stats import ManagerStatus

from .helpers import kubevine_env

STATES = ("waiting", "ready", "dispatched", "running", "retrying", "done", "failed", "cancelled")


def _status(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubevine", "status", c.address, "--token-file", str(c.token_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=kubevine_env(), check=False)


def _adds_up(st: ManagerStatus, submitted: int) -> None:
    assert set(st.tasks) == set(STATES)
    # nothing was collected by the client yet, so the manager still holds every task
    assert sum(st.tasks.values()) == st.totals["submitted"] == submitted
    assert st.tasks["done"] == st.totals["done"]
    assert st.tasks["failed"] == st.totals["failed"]
    assert st.waiting.tasks == st.tasks["waiting"] + st.tasks["ready"] + st.tasks["retrying"]
    assert st.running.tasks == st.tasks["dispatched"] + st.tasks["running"]
    assert sum(w.running + w.queued for w in st.workers) == st.running.tasks
    assert sum(w.queued for w in st.workers) == st.tasks["dispatched"]
    assert st.perf.cores_total == sum(w.resources.cores for w in st.workers)
    assert st.perf.cores_in_use == sum(w.committed.cores for w in st.workers) == st.running.cores
    assert st.perf.cores_in_use <= st.perf.cores_total
    assert st.perf.dispatched >= st.running.tasks + st.tasks["done"] + st.tasks["failed"]


def test_status_json_during_a_run_parses_and_adds_up(cluster_for_status: LocalCluster) -> None:
    c = cluster_for_status
    n = 40
    with Manager(c.address, token=c.token) as m:
        for i in range(n):
            m.submit(Task(f"sleep 0.2; echo {i}"))
        snapshots = []
        for _ in range(3):
            done = _status(c, "--json")
            assert done.returncode == 0, done.stderr
            snapshots.append(ManagerStatus.model_validate_json(done.stdout))
        for st in snapshots:
            _adds_up(st, n)
        assert any(st.running.tasks > 0 for st in snapshots), "never caught a task on a worker"
        assert len(list(m.results(timeout=60))) == n


def test_status_text_names_the_workers_and_the_counts(cluster_for_status: LocalCluster) -> None:
    c = cluster_for_status
    with Manager(c.address, token=c.token) as m:
        m.submit(Task("exit 9"))
        assert [t.exit_code for t in m.results(timeout=30)] == [9]
        st = m.status()
    done = _status(c)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"workflow {st.workflow}" in text
    for w in st.workers:
        assert w.id in text
    assert "failed 1" in text  # totals
    assert "exit 9" in text  # the recent failure, with its reason


def test_status_watch_json_prints_one_object_per_update(cluster_for_status: LocalCluster) -> None:
    done = _status(cluster_for_status, "--watch", "0.1", "--count", "3", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    times = [json.loads(line)["time"] for line in lines]
    assert times == sorted(times) and times[0] < times[-1]


def test_status_of_an_absent_manager_fails_with_a_message() -> None:
    cmd = [sys.executable, "-m", "kubevine", "status", "127.0.0.1:9", "--timeout", "0.5"]
    env = kubevine_env(KUBEVINE_TOKEN="not-a-real-token")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 1
    assert "no answer from the manager" in done.stderr and "Traceback" not in done.stderr


def test_a_status_request_does_not_count_as_a_client(cluster_for_status: LocalCluster) -> None:
    before = json.loads(_status(cluster_for_status, "--json").stdout)
    after = json.loads(_status(cluster_for_status, "--json").stdout)
    assert before["clients"] == after["clients"] == 0
