"""Starting PythonTasks by forking a clean interpreter instead of exec'ing a new one.

A PythonTask runs in an interpreter of its own. Starting one costs the interpreter, its site
packages and cloudpickle: ~40 ms quiet and well over 100 ms on a loaded node, more than many
tasks run. A worker pays that once: ``python -m kubevine.worker.pystarter SOCKET_FD WORKER_PID``
is a starter that imports only what ``pyrunner`` needs, never runs user code itself, and
forks a child per task. The child sets up exactly what a new interpreter would get — its own
session, the sandbox as working directory and ``sys.path[0]``, the task's environment (and
its ``TZ``),
stdout and stderr to the task's output file, stdin from /dev/null — then runs the task as
``pyrunner`` does and exits as an interpreter does (non-daemon threads joined, atexit
handlers run). No module of the user's is loaded before the task runs, and nothing a task
does reaches the next one. What is shared with the starter: the hash seed, ``__main__`` (the
starter's module), the parent pid, and the modules the starter imported (cloudpickle and the
standard library it needs). A task whose
environment sets a variable read at interpreter start-up (``PYTHON*``, ``LD_*``, locale)
gets a really new interpreter instead (see ``worker/sandbox.py``).

The worker and the starter talk over a socketpair, one request and one reply at a time,
each a length-prefixed pickle (both ends are ours): ``("start", sandbox, env, payload,
result, stdout)`` → ``("pid", pid)`` or ``("error", text)``; ``("reap", pid)`` → ``("code",
exit code or None, (peak RSS in KiB, CPU seconds) or None)``. The starter answers a start
once the child has a session of its own (the child closes a pipe then), so a kill sent
right after the start reaches it by ``killpg``. It reaps a child only when asked, so the pid the worker holds
(and its pidfd, and ``killpg`` on it) stays valid until the worker is done with it. The
starter dies with its worker (PR_SET_PDEATHSIG) and exits when the socket closes.
"""

from __future__ import annotations

import atexit
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from kubevine.worker import pyrunner
from kubevine.worker.lifeline import die_with

_LEN = struct.Struct("!I")
REQUEST_TIMEOUT = 10.0  # the first request waits for the starter's imports


def send(sock: socket.socket, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def recv(sock: socket.socket) -> Any:
    """The next message, or None when the other end has closed."""
    head = _read(sock, _LEN.size)
    if head is None:
        return None
    body = _read(sock, _LEN.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _read(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class Forked:
    """A task process forked by the starter: what the sandbox needs of a ``Popen``."""

    def __init__(self, starter: Starter, pid: int) -> None:
        self.starter, self.pid = starter, pid
        self.returncode: int | None = None
        self.usage: tuple[int, float] | None = None  # (peak RSS KiB, CPU seconds) once reaped

    def wait(self) -> int:
        """Its exit code (negative: killed by that signal); -1 if the starter was lost."""
        if self.returncode is None:
            code, self.usage = self.starter.reap(self.pid)
            self.returncode = -1 if code is None else code
        return self.returncode


class Starter:
    """The worker's end: starts the starter on first use, and again if it died."""

    MAX_STARTS = 3  # a starter that keeps dying is given up: tasks get new interpreters

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.starts = 0

    def start(
        self, sandbox: Path, env: dict[str, str], payload: Path, result: Path, stdout: Path
    ) -> Forked | None:
        """Fork a task process; None if the starter cannot (the caller execs instead)."""
        if not self._ensure():
            return None
        reply = self._ask(("start", str(sandbox), env, str(payload), str(result), str(stdout)))
        if reply is None or reply[0] != "pid":
            return None
        return Forked(self, int(reply[1]))

    def reap(self, pid: int) -> tuple[int | None, tuple[int, float] | None]:
        reply = self._ask(("reap", pid))
        return (None, None) if reply is None else (reply[1], reply[2])

    def _ask(self, req: tuple[object, ...]) -> Any:
        if self.sock is None:
            return None
        try:
            send(self.sock, req)
            reply = recv(self.sock)
        except OSError:
            reply = None
        if reply is None:
            self.close()  # lost or hung: the next task starts a new one
        return reply

    def _ensure(self) -> bool:
        if self.proc is not None and self.proc.poll() is None and self.sock is not None:
            return True
        self.close()
        if self.starts >= self.MAX_STARTS:
            return False
        self.starts += 1
        ours, theirs = socket.socketpair()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.workdir / "pystarter.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "kubevine.worker.pystarter",
                        str(theirs.fileno()),
                        str(os.getpid()),
                    ],
                    pass_fds=[theirs.fileno()],
                    cwd=self.workdir,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError:
            ours.close()
            return False
        finally:
            theirs.close()
        ours.settimeout(REQUEST_TIMEOUT)
        self.sock = ours
        return True

    def close(self) -> None:
        """Stop the starter (it exits when its socket closes; killed if it does not)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# ---------------------------------------------------------------- the starter process


def _child(
    sock: socket.socket, ready: int, sandbox: str, env: dict[str, str], payload: str, result: str, out: str
) -> None:
    """In the forked child: become the task's interpreter, run it, exit. Never returns."""
    code = 1
    try:
        sock.close()
        os.setsid()
        os.close(ready)  # in a session of its own now: killpg on its pid reaches it
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(sandbox)
        os.environ.clear()
        os.environ.update(env)
        time.tzset()  # as a new interpreter would read TZ
        sys.path[0] = sandbox
        sys.argv = [pyrunner.__file__, payload, result]
        code = pyrunner.main([payload, result])
        threading._shutdown()  # type: ignore[attr-defined]  # as at interpreter exit: join non-daemon threads
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock: socket.socket) -> int:
    while (req := recv(sock)) is not None:
        if req[0] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError as e:
                os.close(r)
                os.close(w)
                send(sock, ("error", f"fork failed: {e}"))
                continue
            if pid == 0:
                os.close(r)
                _child(sock, w, *req[1:])
            os.close(w)
            os.read(r, 1)  # EOF once the child has its own session (or has died): then answer
            os.close(r)
            send(sock, ("pid", pid))
        elif req[0] == "reap":
            usage: tuple[int, float] | None = None
            try:
                _, status, ru = os.wait4(req[1], 0)
                code: int | None = os.waitstatus_to_exitcode(status)
                usage = (ru.ru_maxrss, ru.ru_utime + ru.ru_stime)
            except ChildProcessError:
                code = None
            send(sock, ("code", code, usage))
    return 0


if __name__ == "__main__":
    fd, parent = sys.argv[1:]
    die_with(int(parent))
    raise SystemExit(serve(socket.socket(fileno=int(fd))))
