"""A worker process started by the test itself (its pid, its transfer port, its workdir known),
joined to a LocalCluster's manager or to any address (a FakeManager's)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from kubevine import LocalCluster


class OwnWorker:
    def __init__(
        self,
        cluster: LocalCluster | tuple[str, str],
        workdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        token_in_env: bool = True,
    ) -> None:
        address, token = (cluster.address, cluster.token) if isinstance(cluster, LocalCluster) else cluster
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "kubevine", "worker", address, "--workdir", str(workdir)]
        cmd += ["--cores", "2", "--memory", "2000", "--disk", "4000", *args]
        full_env = {**os.environ, **(env or {})}
        if token_in_env:
            full_env["KUBEVINE_TOKEN"] = token
        self.log = open(workdir.parent / f"{workdir.name}.log", "ab")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def transfer_address(self, timeout: float = 30.0) -> str:
        """Where its transfer server listens (found from its listening socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the worker exited"
            ports = [c.laddr for c in self.ps.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            if ports:
                return f"{ports[0].ip}:{ports[0].port}"
            time.sleep(0.05)
        raise AssertionError("the worker never listened")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for(cond: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")
