"""A manager and workers as local subprocesses: kubevine on a laptop, no cluster needed.

``LocalCluster(workers=2)`` starts ``kubevine manager`` on a free port (state in memory,
or in Redis when given ``redis=URL``), then ``kubevine worker`` processes, all sharing a
generated token written to a file only its owner can read. Used by ``Manager()`` and as a
context manager of its own; everything is stopped on exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from kubevine import auth, netaddr
from kubevine.admin import Admin
from kubevine.netaddr import local_address


class LocalCluster:
    def __init__(
        self,
        workers: int = 2,
        *,
        cores: float = 1,
        memory: int = 4096,
        disk: int = 16384,
        port: int = 0,
        redis: str | None = None,
        name: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        heartbeat_timeout: float = 30.0,
        log_level: str = "WARNING",
        transfers_per_source: int | None = None,
        worker_args: Sequence[str] = (),
        encrypt: bool = False,
        host: str = "127.0.0.1",
        metrics_port: int | None = None,
        publish_token: bool = False,
    ) -> None:
        self.n_workers = workers
        self.cores, self.memory, self.disk = cores, memory, disk
        self.port = port
        self.redis = redis
        self.name = name or f"local-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubevine-"))
        self.heartbeat_timeout = heartbeat_timeout
        self.log_level = log_level
        self.transfers_per_source = transfers_per_source
        self.worker_args = list(worker_args)  # more `kubevine worker` options: ["--python-tasks", "exec"]
        self.encrypt = encrypt  # every connection encrypted (--encrypt on the manager and workers)
        self.host = host  # where the manager listens (0.0.0.0: workers on other machines may join)
        self.metrics_port = metrics_port
        self.publish_token = publish_token  # `kubevine worker localhost PORT` finds the token
        self.published: Path | None = None
        self.token = auth.generate_token()
        self.token_file = auth.write_token(self.workdir / "token", self.token)
        self.manager: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()  # the process that stops it at exit
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kubevine", "--log-level", self.log_level, *args]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start the manager and the workers, and return once every worker is connected. The
        workers start with the manager, not after it (each is a Python start-up of ~0.4 s):
        they are given the manager's port, chosen here when ``port`` is 0, and connect as soon
        as it listens. A port taken by someone else in between is chosen again."""
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            port = self.port or netaddr.free_port(self.host)
            try:
                self._start_manager(port, deadline)
                break
            except _PortTaken:
                if self.port or attempt == 2:
                    raise
        return self

    def _start_manager(self, port: int, deadline: float) -> None:
        mdir = self.workdir / "manager"
        mdir.mkdir(parents=True, exist_ok=True)
        addr_file = mdir / "address"
        addr_file.unlink(missing_ok=True)
        args = [
            "manager",
            "--name",
            self.name,
            "--host",
            self.host,
            "--port",
            str(port),
            "--token-file",
            str(self.token_file),
            "--workdir",
            str(mdir),
            "--heartbeat-timeout",
            str(self.heartbeat_timeout),
        ]
        if self.redis:
            args += ["--redis", self.redis]
        if self.transfers_per_source is not None:
            args += ["--transfers-per-source", str(self.transfers_per_source)]
        if self.metrics_port is not None:
            args += ["--metrics-port", str(self.metrics_port)]
        if self.encrypt:
            args += ["--encrypt"]
        log_path = mdir / "manager.log"
        start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self.manager = subprocess.Popen(self._cmd(*args), stdout=log, stderr=subprocess.STDOUT)
        # a program that ends without closing its Manager ends its manager too (TaskVine's lives
        # in the program's process): else it and its workers would outlive the program
        self._owner = os.getpid()
        atexit.register(self._stop_at_exit)
        self.address = f"{local_address(self.host)}:{port}"
        try:
            for _ in range(self.n_workers):
                self.add_worker()
            while not (addr_file.exists() and addr_file.read_text().strip()):  # written, not just created
                if self.manager.poll() is not None:
                    said = log_path.read_bytes()[start:].decode(errors="replace")
                    if "Address already in use" in said:
                        self._end_processes()  # and try another port, in the same folder
                        self.workers = []
                        raise _PortTaken(port)
                    self.stop()
                    raise RuntimeError(
                        f"the local manager exited with {self.manager.returncode}: {said[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("the local manager did not start")
                time.sleep(0.02)
            self.address = addr_file.read_text().strip()
            if self.publish_token:
                self.published = auth.publish_token(int(self.address.rsplit(":", 1)[1]), self.token)
            self.wait_for_workers(self.n_workers, timeout=max(1.0, deadline - time.monotonic()))
        except _PortTaken:
            raise
        except BaseException:
            self.stop()  # never leave a manager or workers running behind a failed start
            raise

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        """Return once ``n`` workers are connected to the manager."""
        admin = Admin(self.address, self.token, encrypt=self.encrypt)
        deadline = time.monotonic() + timeout
        while len(admin.status().workers) < n:
            dead = [p.returncode for p in self.workers if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"local workers did not connect (exit codes {dead}); "
                    f"see {self.workdir}/worker-*/worker.log"
                )
            time.sleep(0.02)

    def add_worker(
        self, *, cores: float | None = None, cache_dir: str | None = None, node: str | None = None
    ) -> subprocess.Popen[bytes]:
        i = len(self.workers)
        wdir = self.workdir / f"worker-{i}"
        wdir.mkdir(parents=True, exist_ok=True)
        args = [
            "worker",
            self.address,
            "--cores",
            str(cores or self.cores),
            "--memory",
            str(self.memory),
            "--disk",
            str(self.disk),
            "--workdir",
            str(wdir),
        ]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        if self.encrypt:
            args += ["--encrypt"]
        if node:
            args += ["--node", node]
        args += self.worker_args
        # the token goes in the environment, which the worker wipes once read (a file would stay
        # readable by the tasks, which run as the same user)
        env = {**os.environ, auth.ENV: self.token}
        with open(wdir / "worker.log", "ab") as log:
            p = subprocess.Popen(self._cmd(*args), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.workers.append(p)
        return p

    def worker_command(self) -> list[str]:
        """How a worker on another machine (or started by hand) joins this manager."""
        port = self.address.rsplit(":", 1)[1]
        host = socket.gethostname() if self.host == "0.0.0.0" else self.address.rsplit(":", 1)[0]
        cmd = ["kubevine", "worker", "--token-file", str(self.token_file)]
        return [*cmd, "--encrypt", host, port] if self.encrypt else [*cmd, host, port]

    def _stop_at_exit(self) -> None:
        if os.getpid() == self._owner:  # (not in a child forked from the program, leaving)
            self.stop()

    def stop(self, grace: float = 5.0) -> None:
        atexit.unregister(self._stop_at_exit)
        if self.published is not None:
            self.published.unlink(missing_ok=True)
            self.published = None
        self._end_processes(grace)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _end_processes(self, grace: float = 5.0) -> None:
        procs = [p for p in [*self.workers, self.manager] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _PortTaken(RuntimeError):
    """The manager's port is taken by another program (chosen here: it is chosen again)."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use by another program: the local manager cannot listen on it")


def free_port(spec: int | Sequence[int]) -> int:
    """A port for a manager from TaskVine's forms: an int (0 is any free port), or ``[low,
    high]``: the first port of that inclusive range nobody listens on."""
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str) or len(spec) != 2 or not all(isinstance(p, int) for p in spec):
        raise ValueError("port should be a single integer, or a sequence of two integers")
    low, high = spec
    if low > high:
        raise TypeError(f"port range {low}-{high}: the low end is above the high end")
    for port in range(low, high + 1):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}-{high}")
