"""Simulated workers (kubevine.simworker) against real managers: fixtures that stop everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevine import LocalCluster, Manager
from kubevine.simworker import SimConfig, Simulator
from kubevine.testing import wait_for

TOKEN = "scale-tests-token-5d1e9b"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """A manager of its own (``LocalCluster(workers=0, ...)``), stopped afterwards."""
    started: list[LocalCluster] = []

    def start(**kw: Any) -> LocalCluster:
        kw.setdefault("workdir", tmp_path / f"cluster{len(started)}")
        c = LocalCluster(workers=0, **kw)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def simulate() -> Iterator[Callable[..., Simulator]]:
    """Simulated workers on a thread of their own, connected to ``address``; stopped afterwards."""
    made: list[Simulator] = []

    def start(address: str, token: str, **kw: Any) -> Simulator:
        sim = Simulator(SimConfig(manager=address, token=token, **kw))
        made.append(sim)
        return sim.start()

    yield start
    for sim in made:
        sim.stop()


@pytest.fixture
def client() -> Iterator[Callable[..., Manager]]:
    made: list[Manager] = []

    def connect(address: str, token: str, **kw: Any) -> Manager:
        m = Manager(address, token=token, **kw)
        made.append(m)
        return m

    yield connect
    for m in made:
        m.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Managers and simulator processes started by one test: SIGKILLed if still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "KUBEVINE_TOKEN": TOKEN}

    def start(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(self.tmp / log, "ab") as f:
            p = subprocess.Popen([sys.executable, *args], env=self.env, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def manager(self, *extra: str, workdir: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
        """A ``kubevine manager`` serving on 127.0.0.1; its address once it serves."""
        addr = workdir / "address"
        addr.unlink(missing_ok=True)
        args = ["-m", "kubevine", "manager", "--host", "127.0.0.1", "--port", str(port)]
        p = self.start([*args, "--workdir", str(workdir), *extra], f"manager-{len(self.procs)}.log")
        wait_for(lambda: addr.exists() or p.poll() is not None, timeout=60, what="the manager serving")
        assert p.poll() is None, f"the manager exited with {p.returncode}"
        return p, addr.read_text().strip()

    def kill(self, p: subprocess.Popen[bytes]) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "procs")
    yield procs
    procs.stop()
