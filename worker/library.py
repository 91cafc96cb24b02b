"""Library instances on a worker: start them, feed them calls, notice when they die.

Each installed library is a ``kubevine.worker.libproc`` process connected to the worker by
a ZeroMQ PAIR socket over ipc; a batch of calls, and a batch of results, is one msgpack
frame. The worker loop polls the socket (results, ready/failed) and a pidfd (the process
died). A library that crashes fails its in-flight calls with a clear error and is started
again; one that keeps crashing at start-up is reported failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq

from kubevine.protocol import Assignment, AttemptResult, LibrarySpec, Outcome
from kubevine.worker.states import LibraryState

MAX_RESTARTS = 3  # crashes within RESTART_WINDOW before a library is given up
RESTART_WINDOW = 60.0


@dataclass
class LibraryInstance:
    spec: LibrarySpec
    payload: bytes
    workdir: Path
    ctx: zmq.Context[zmq.Socket[bytes]]
    env: dict[str, str]
    sock: zmq.Socket[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    state: LibraryState = LibraryState.STARTING
    inflight: dict[tuple[int, int], tuple[Assignment, float]] = field(default_factory=dict)
    # calls to send: assignment, pickled arguments, and (if any) the paths of its inputs and
    # whether its value is to be kept here (``{"inputs": {remote name: path}, "value": bool}``)
    outbox: list[tuple[Assignment, bytes, dict[str, object] | None]] = field(default_factory=list)
    crashes: list[float] = field(default_factory=list)
    log_path: Path | None = None
    inputs: dict[str, Path] = field(default_factory=dict)  # its own inputs: remote name -> cache path

    @property
    def home(self) -> Path:
        """Its working directory: its inputs (links into the cache) and environments are there."""
        return self.workdir / f"lib-{self.spec.name}"

    def _prepare_home(self) -> dict[str, str]:
        """Its working directory with its inputs in place; the environment it runs with."""
        self.home.mkdir(parents=True, exist_ok=True)
        for rname, path in self.inputs.items():
            dest = self.home / rname
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.is_symlink():
                os.symlink(path, dest)
        env = dict(self.env)
        env.update(self.spec.env)
        for name in self.spec.environments:  # unpacked environments: their programs first
            env["PATH"] = f"{self.home / name / 'bin'}:{env.get('PATH', os.defpath)}"
            env.setdefault("CONDA_PREFIX", str(self.home / name))
        return env

    def start(self) -> None:
        """Spawn the library process and hand it its code."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        endpoint = f"ipc://{self.workdir}/lib-{uuid.uuid4().hex[:8]}.sock"
        self.sock = self.ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        env = self._prepare_home()
        self.log_path = self.workdir / f"{self.spec.name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubevine.worker.libproc", endpoint, str(os.getpid())],
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.sock.send_multipart([b"init", self.spec.model_dump_json().encode(), self.payload])
        self.state = LibraryState.STARTING

    def send_calls(self) -> None:
        """Send the queued calls in one batch (only once the library is ready)."""
        if self.state != LibraryState.READY or not self.outbox or self.sock is None:
            return
        now = time.perf_counter()
        calls = []
        inflight = self.inflight
        for a, payload, extra in self.outbox:
            spec = a.spec
            calls.append((spec.id, a.attempt, spec.function, payload, extra))
            inflight[(spec.id, a.attempt)] = (a, now)
        self.outbox.clear()
        self.sock.send_multipart([b"calls", msgpack.packb(calls)])

    def read(self) -> tuple[str, list[tuple[AttemptResult, list[bytes]]], str | None]:
        """One message from the library: ("ready"|"failed"|"results", results, error)."""
        assert self.sock is not None
        parts = self.sock.recv_multipart()
        kind = parts[0].decode()
        if kind == "ready":
            self.state = LibraryState.READY
            return kind, [], None
        if kind == "failed":
            self.state = LibraryState.FAILED
            return kind, [], parts[1].decode(errors="replace")
        out: list[tuple[AttemptResult, list[bytes]]] = []
        now = time.time()
        for tid, attempt, ok, wall, data in msgpack.unpackb(parts[1]):
            entry = self.inflight.pop((tid, attempt), None)
            if entry is None:
                continue  # killed meanwhile
            out.append(
                (
                    AttemptResult(
                        task_id=tid,
                        attempt=attempt,
                        outcome=Outcome.SUCCESS if ok else Outcome.EXCEPTION,
                        output_frame=0,
                        wall_time=wall,
                        started=now - wall,
                    ),
                    [data],
                )
            )
        return kind, out, None

    def died(self) -> tuple[str, list[tuple[AttemptResult, list[bytes]]]]:
        """The process is gone: fail what it was running; say why."""
        code = self.proc.wait() if self.proc is not None else None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        why = f"library {self.spec.name!r} crashed ({how})"
        failed: list[tuple[AttemptResult, list[bytes]]] = [
            (
                AttemptResult(task_id=a.spec.id, attempt=a.attempt, outcome=Outcome.LIBRARY_ERROR, error=why),
                [],
            )
            for a, _ in self.inflight.values()
        ]
        self.inflight.clear()
        self.close()
        now = time.time()
        self.crashes = [t for t in self.crashes if now - t < RESTART_WINDOW] + [now]
        return why, failed

    def may_restart(self) -> bool:
        return len(self.crashes) <= MAX_RESTARTS

    def stop(self) -> None:
        if self.sock is not None and self.state == LibraryState.READY:
            try:
                self.sock.send_multipart([b"stop"], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.close()
        self.state = LibraryState.STOPPED

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:] if self.log_path else ""
        except OSError:
            return ""
