"""The client's Pythonic forms and TaskVine forms: futures, as_completed, tags, Manager()."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubevine import Manager, Task, as_completed
from kubevine.testing import wait_for


def test_futures_and_as_completed_yield_every_task_once(cluster, client) -> None:
    m = client(cluster(workers=2))
    tasks = [Task(f"sleep 0.0{i % 3}; echo {i}") for i in range(30)]
    futures = [t.future for t in tasks]
    for t in tasks:
        m.submit(t)
    seen = [t.output for t in as_completed(futures, timeout=60)]
    assert sorted(seen) == sorted(f"{i}\n" for i in range(30))
    assert all(f.result().successful() for f in futures)
    assert m.empty()


def test_cancel_by_tag_cancels_only_that_tag(cluster, client) -> None:
    m = client(cluster(workers=1))
    slow = [Task("sleep 30", tag="slow") for _ in range(3)]
    fast = [Task("echo fast", tag="fast") for _ in range(3)]
    for t in [*slow, *fast]:
        m.submit(t)
    m.cancel_all_by_tag("slow")
    got = [m.wait(30) for _ in range(6)]
    assert {t.state for t in slow} == {"cancelled"}
    assert {t.state for t in fast} == {"done"}
    assert all(t is not None for t in got)


def test_wait_returns_none_on_timeout_and_when_nothing_is_outstanding(cluster, client) -> None:
    m = client(cluster(workers=1))
    assert m.wait(0.1) is None  # nothing submitted
    t = Task("sleep 1; echo late")
    m.submit(t)
    t0 = time.monotonic()
    assert m.wait(0.2) is None
    assert time.monotonic() - t0 < 1.0
    assert not m.empty()
    assert m.wait(30) is t and m.empty()


def test_manager_with_no_address_runs_a_local_cluster_and_stops_it(tmp_path: Path) -> None:
    with Manager(workers=2) as m:
        st = m.status()
        assert len(st.workers) == 2
        pids = [w.id.split("-")[-2] for w in st.workers]
        t = Task("echo local")
        m.submit(t)
        assert m.wait(30) is t and t.output == "local\n"
    for pid in pids:  # the workers are gone
        wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), timeout=10, what=f"worker {pid} to exit")


def test_a_manager_without_a_token_makes_one_readable_only_by_its_owner(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBEVINE_TOKEN"}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubevine",
            "manager",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--workdir",
            str(tmp_path),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token_file = wait_for(lambda: (tmp_path / "token").exists() and tmp_path / "token", what="token file")
        address = wait_for(
            lambda: (tmp_path / "address").exists() and (tmp_path / "address").read_text().strip()
        )
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with Manager(address, token=token_file.read_text().strip()) as m:
            assert m.status().workers == []
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert str(tmp_path / "token") in err  # it says where


def test_a_worker_reconnects_to_a_restarted_manager(tmp_path: Path) -> None:
    token = "t0ken-for-a-restarted-manager"
    env = {**os.environ, "KUBEVINE_TOKEN": token}

    def start_manager(port: int) -> subprocess.Popen[bytes]:
        (tmp_path / "address").unlink(missing_ok=True)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevine",
                "manager",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workdir",
                str(tmp_path),
                "--heartbeat-interval",
                "0.2",
                "--heartbeat-timeout",
                "2",
            ],
            env=env,
        )

    first = start_manager(0)
    address = wait_for(lambda: (tmp_path / "address").exists() and (tmp_path / "address").read_text().strip())
    port = int(address.rsplit(":", 1)[1])
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubevine",
            "worker",
            address,
            "--cores",
            "1",
            "--workdir",
            str(tmp_path / "w"),
        ],
        env=env,
    )
    second = None
    try:
        with Manager(address, token=token) as m:
            wait_for(lambda: len(m.status().workers) == 1, what="worker registered")
        first.kill()
        first.wait()
        second = start_manager(port)
        wait_for(lambda: (tmp_path / "address").exists(), what="second manager up")
        with Manager(address, token=token) as m:
            wait_for(lambda: len(m.status().workers) == 1, timeout=30, what="worker re-registered")
            t = Task("echo again")
            m.submit(t)
            assert m.wait(30) is t and t.output == "again\n"
        assert worker.poll() is None  # the same worker process, never restarted
    finally:
        worker.terminate()
        worker.wait(10)
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)


@pytest.mark.parametrize("cmd", ["exit 0", "true"])
def test_tasks_are_reusable_after_they_finish(cluster, client, cmd: str) -> None:
    m = client(cluster(workers=1))
    t = Task(cmd)
    m.submit(t)
    assert m.wait(30) is t
    first = t.id
    m.submit(t)
    assert m.wait(30) is t and t.id != first and t.successful()
