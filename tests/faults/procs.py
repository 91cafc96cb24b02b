"""Real processes for the fault tests: a Redis server of their own (to kill, with AOF, with a
password or TLS), managers and workers started as `kubevine` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis

from kubevine.testing import wait_for

TOKEN = "fault-token-8f3a2c"  # distinctive, so a test can grep logs for it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server on a free port with its own directory; killed and restarted at will."""

    dir: Path
    aof: bool = False
    password: str | None = None
    user: str | None = None  # an ACL user (with ``password``) instead of the default user's password
    tls: Path | None = None  # a directory with ca.crt, server.crt, server.key
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password:
            auth = f"{self.user or ''}:{self.password}@"
        q = f"?ssl_ca_certs={self.tls / 'ca.crt'}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{q}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else ["--appendonly", "no"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(self.tls / "server.crt")]
            args += ["--tls-key-file", str(self.tls / "server.key")]
            args += ["--tls-ca-cert-file", str(self.tls / "ca.crt"), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password and self.user:
            args += ["--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
            args += ["--user", "default", "off"]
        elif self.password:
            args += ["--requirepass", self.password]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ping, timeout=20, what=f"redis-server on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def ping(self) -> bool:
        try:
            r = self.client()
            try:
                return bool(r.ping())
            finally:
                r.close()
        except (redis.RedisError, OSError):
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def kubevine_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "KUBEVINE_TOKEN": TOKEN, **extra}


@dataclass
class Procs:
    """Managers and workers of one test, all stopped at the end."""

    tmp: Path
    managers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def manager(
        self,
        redis_url: str,
        name: str,
        *extra: str,
        port: int = 0,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> str:
        """Start a manager on the workflow; returns its address once it serves."""
        workdir = workdir or self.tmp / "m"
        addr_file = workdir / "address"
        addr_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "kubevine", "manager", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--name", name, "--redis", redis_url, "--workdir", str(workdir)]
        args += ["--heartbeat-timeout", "4", "--recover-grace", "10", "--lease-ttl", "2", *extra]
        n = len(self.managers)
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(self.tmp / f"manager-{n}.log", "ab") as log:
            p = subprocess.Popen(args, env=env or kubevine_env(), stdout=log, stderr=subprocess.STDOUT)
        self.managers.append(p)
        wait_for(lambda: addr_file.exists() or p.poll() is not None, timeout=60, what="manager up")
        assert p.poll() is None, (self.tmp / f"manager-{n}.log").read_text()[-3000:]
        return addr_file.read_text().strip()

    def worker(self, address: str, i: int, cores: int = 1, env: dict[str, str] | None = None) -> None:
        args = [sys.executable, "-m", "kubevine", "worker", address, "--cores", str(cores)]
        args += ["--workdir", str(self.tmp / f"w{i}")]
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(self.tmp / f"worker-{i}.log", "ab") as log:
            self.workers.append(
                subprocess.Popen(args, env=env or kubevine_env(), stdout=log, stderr=subprocess.STDOUT)
            )

    def kill_manager(self) -> None:
        p = self.managers[-1]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in [*self.others, *self.workers, *self.managers]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.others, *self.workers, *self.managers]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def record(i: int, runs: str) -> int:
    """A function call that leaves a trace of each execution (to count re-executions)."""
    with open(runs, "a") as f:
        f.write(f"c{i}\n")
    return i * i


def runs_command(i: int, runs: Path) -> str:
    """A command task that leaves a trace of each execution and prints ``out<i>``."""
    return f"echo t{i} >> {runs}; echo out{i}"


def slow_square(x: int) -> int:
    import time

    time.sleep(0.05)
    return x * x


def count_runs(runs: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if runs.exists():
        for line in runs.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def tx_lines(log: Path) -> list[tuple[float, str]]:
    """(seconds, text after the manager id) of each transactions-log line."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit():
            out.append((int(parts[0]) / 1e6, parts[2]))
    return out
