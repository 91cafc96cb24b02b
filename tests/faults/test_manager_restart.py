"""The manager is SIGKILLed mid-run and started again on its Redis state: every task
completes exactly once, the workers were never restarted, and the client's wait() goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubevine import Manager, Task
from kubevine.testing import wait_for

TOKEN = "restart-token"


def start_manager(tmp: Path, port: int, redis_url: str, name: str) -> subprocess.Popen[bytes]:
    (tmp / "m" / "address").unlink(missing_ok=True)
    args = [
        sys.executable,
        "-m",
        "kubevine",
        "manager",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--name",
        name,
        "--redis",
        redis_url,
        "--workdir",
        str(tmp / "m"),
        "--heartbeat-timeout",
        "4",
        "--recover-grace",
        "10",
        "--lease-ttl",
        "2",
    ]
    with open(tmp / "manager.log", "ab") as log:
        p = subprocess.Popen(
            args, env={**os.environ, "KUBEVINE_TOKEN": TOKEN}, stdout=log, stderr=subprocess.STDOUT
        )
    wait_for(lambda: (tmp / "m" / "address").exists(), timeout=30, what="manager up")
    return p


def test_killed_manager_restarts_from_redis_and_every_task_completes_once(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    first = start_manager(tmp_path, 0, redis_url, workflow_name)
    address = (tmp_path / "m" / "address").read_text().strip()
    port = int(address.rsplit(":", 1)[1])
    env = {**os.environ, "KUBEVINE_TOKEN": TOKEN}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevine",
                "worker",
                address,
                "--cores",
                "1",
                "--workdir",
                str(tmp_path / f"w{i}"),
            ],
            env=env,
        )
        for i in range(2)
    ]
    second = None
    try:
        with Manager(address, token=TOKEN, name="analyst") as m:
            tasks = [Task(f"sleep 0.02; echo {i}") for i in range(400)]
            for t in tasks:
                m.submit(t)
            got = []
            while len(got) < 200:
                t = m.wait(60)
                assert t is not None
                got.append(t)
            first.send_signal(signal.SIGKILL)
            first.wait()
            t0 = time.monotonic()
            second = start_manager(tmp_path, port, redis_url, workflow_name)
            while (t := m.wait(120)) is not None:
                got.append(t)
            elapsed = time.monotonic() - t0
        assert len(got) == 400 and len({t.id for t in got}) == 400  # each exactly once
        assert sorted(t.output for t in got) == sorted(f"{i}\n" for i in range(400))
        assert all(t.successful() for t in got)
        assert all(w.poll() is None for w in workers)  # the same worker processes throughout
        assert elapsed < 60
    finally:
        for w in workers:
            w.terminate()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        for w in workers:
            w.wait(10)


def test_a_second_manager_on_a_live_workflow_is_refused_clearly(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    first = start_manager(tmp_path, 0, redis_url, workflow_name)
    try:
        args = [
            sys.executable,
            "-m",
            "kubevine",
            "manager",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--name",
            workflow_name,
            "--redis",
            redis_url,
            "--workdir",
            str(tmp_path / "m2"),
            "--lease-ttl",
            "1",
        ]
        out = subprocess.run(
            args, env={**os.environ, "KUBEVINE_TOKEN": TOKEN}, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 3
        assert "driven by another live manager" in out.stderr and "lease" in out.stderr
        assert first.poll() is None  # the first one is unharmed
    finally:
        first.terminate()
        first.wait(10)
