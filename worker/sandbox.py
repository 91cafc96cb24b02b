"""Running one task's process in a sandbox directory of its own.

The sandbox holds the task's inputs under their remote names; the command runs there with its
environment. Its stdout and stderr go to a FIFO beside the sandbox that the worker's loop
reads as they are written, keeping at most the cap in memory and counting the rest: a task
that prints a gigabyte costs the worker a megabyte and no disk. When the process exits the
worker reaps it with its resource usage (:func:`reap`); judging the attempt and collecting its
outputs is :mod:`kubevine.worker.outputs`. The sandbox is emptied when the attempt ends.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubevine.protocol import Assignment, AttemptResult, MeasuredResources, Outcome
from kubevine.worker.pystarter import Forked, Starter

READ_PER_TURN = 1 << 20  # bytes of one task's output read per turn of the loop at most

# Characters that make a command need a shell. A command without them is run directly
# (the same argv the shell would build, one exec fewer: ~0.5 ms per task).
_SHELL_CHARS = frozenset("$&|;<>()*?[]{}~`'\"\\\n#=!%")


def argv_for(command: str) -> list[str] | None:
    """The argv to exec directly, or None when the command needs ``/bin/sh -c``."""
    if not command or any(c in _SHELL_CHARS for c in command):
        return None
    parts = command.split()
    if not parts or ("/" not in parts[0] and parts[0] in _SH_BUILTINS):
        return None
    return parts


_SH_BUILTINS = frozenset(
    [
        ":",
        ".",
        "cd",
        "exec",
        "exit",
        "export",
        "set",
        "unset",
        "ulimit",
        "umask",
        "wait",
        "trap",
        "source",
        "alias",
        "read",
        "eval",
        "shift",
        "test",
        "[",
        "echo",
        "printf",
        "true",
        "false",
    ]
)


@dataclass
class Attempt:
    """One attempt on this worker: its sandbox, its process, what it produced."""

    assignment: Assignment
    sandbox: Path
    proc: subprocess.Popen[bytes] | Forked | None = None
    pidfd: int | None = None  # becomes readable when the process exits
    payload_path: Path | None = None  # PythonTask: the pickled function and arguments
    started: float = 0.0
    t0: float = 0.0
    deadline: float | None = None
    deadline_outcome: Outcome = Outcome.MAX_WALL_TIME  # which limit the deadline is
    frames: list[bytes] = field(default_factory=list)
    out_fd: int | None = None  # the read end of its stdout FIFO
    out: bytearray = field(default_factory=bytearray)  # stdout, up to the cap
    out_dropped: int = 0  # bytes past the cap, read and thrown away
    out_fifo: bool = False  # its stdout is the FIFO at stdout_path (a forked PythonTask's)
    exit_code: int | None = None  # once reaped
    measured: MeasuredResources | None = None
    ended: float = 0.0  # perf_counter when it was reaped
    watched: dict[str, int] = field(default_factory=dict)  # watched outputs: bytes sent so far
    mounted: list[str] = field(default_factory=list)  # cache folders linked in (mount_symlink)
    peak_kb: int = 0  # the largest VmHWM sampled while it ran
    next_sample: float = 0.0  # perf_counter

    def result(self, outcome: Outcome, **kw: object) -> AttemptResult:
        a = self.assignment
        end = self.ended or time.perf_counter()
        return AttemptResult(
            task_id=a.spec.id,
            attempt=a.attempt,
            outcome=outcome,
            started=self.started,
            wall_time=end - self.t0 if self.t0 else 0.0,
            resources_measured=self.measured,
            **kw,
        )

    def stdout(self, cap: int) -> bytes:
        """What it printed, with a note when more was cut."""
        if not self.out_dropped:
            return bytes(self.out)
        total = len(self.out) + self.out_dropped
        return bytes(self.out[:cap]) + f"\n[kubevine: output truncated at {cap} of {total} bytes]\n".encode()


def start_command(
    att: Attempt,
    base_env: Mapping[str, str],
    *,
    force_shell: bool = False,
    argv: list[str] | None = None,
    command: str | None = None,
) -> AttemptResult | None:
    """Start the command in its sandbox without waiting; a result only if it cannot start.

    A command without shell syntax is exec'd directly; one that is not found or cannot be
    executed is handed to the shell, so the user sees the shell's own message and exit code
    (127: not found, 126: found but not executable), as TaskVine's workers do.
    """
    spec = att.assignment.spec
    env = _begin(att, base_env)
    command = command if command is not None else spec.command or ""
    if argv is None and not force_shell:
        argv = argv_for(command)
    try:
        wfd = open_output(att)
    except OSError as e:
        return att.result(Outcome.SANDBOX_ERROR, error=f"could not prepare the task's output: {e}")
    try:
        att.proc = subprocess.Popen(
            argv if argv is not None else command,
            shell=argv is None,
            cwd=att.sandbox,
            stdout=wfd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        close_output(att)
        if argv is not None and e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.EPERM):
            return start_command(att, base_env, force_shell=True, command=command)
        if argv is None:
            return att.result(Outcome.SANDBOX_ERROR, error=f"could not start /bin/sh: {e}")
        return att.result(Outcome.SANDBOX_ERROR, error=f"could not start the command: {e}")
    finally:
        os.close(wfd)
    att.pidfd = os.pidfd_open(att.proc.pid)
    att.next_sample = att.t0 + 0.02
    return None


def _begin(att: Attempt, base_env: Mapping[str, str]) -> dict[str, str]:
    """Start the attempt's clocks and its deadline; the environment its process gets."""
    spec = att.assignment.spec
    att.started = time.time()
    att.t0 = time.perf_counter()
    if spec.time_max:
        att.deadline = att.t0 + spec.time_max
    if spec.time_end is not None:
        end = att.t0 + (spec.time_end - att.started)  # epoch seconds in perf_counter terms
        if att.deadline is None or end < att.deadline:
            att.deadline, att.deadline_outcome = end, Outcome.MAX_END_TIME
    env = dict(base_env)
    env.update(spec.env)
    return env


# Variables an interpreter reads as it starts: a task that sets one gets a new interpreter
# rather than a child forked from the starter, which started without them.
_START_VARS = ("PYTHON", "LD_", "LC_", "LANG")


def start_python(
    att: Attempt,
    base_env: Mapping[str, str],
    payload: bytes,
    starter: Starter | None = None,
    python: str | None = None,
) -> AttemptResult | None:
    """Start a PythonTask: an interpreter of its own in the sandbox runs the pickled function,
    forked from the worker's starter when there is one (see ``worker/pystarter.py``);
    ``python``: another interpreter to run it with (an environment's)."""
    att.payload_path = att.sandbox.with_name(att.sandbox.name + ".payload")
    att.payload_path.write_bytes(payload)
    result = result_path(att)
    result.unlink(missing_ok=True)
    spec = att.assignment.spec
    if starter is not None and python is None and not any(k.startswith(_START_VARS) for k in spec.env):
        env = _begin(att, base_env)
        try:
            wfd = open_output(att, fifo=True)
        except OSError as e:
            return att.result(Outcome.SANDBOX_ERROR, error=f"could not prepare the task's output: {e}")
        os.close(wfd)  # (the child opens the FIFO by its name; our reading end keeps it open)
        att.proc = starter.start(att.sandbox, env, att.payload_path, result, stdout_path(att.sandbox))
        if att.proc is not None:
            try:
                att.pidfd = os.pidfd_open(att.proc.pid)  # the starter keeps it unreaped until we ask
                att.next_sample = att.t0 + 0.02
                return None
            except OSError:  # cannot watch it (the starter died and it was reaped, or no fds)
                kill_process(att.proc)
                att.proc.wait()
                att.proc = None  # started again below as a new interpreter
        close_output(att)
    argv = [python or sys.executable, "-m", "kubevine.worker.pyrunner", str(att.payload_path), str(result)]
    return start_command(att, base_env, argv=argv)


def result_path(att: Attempt) -> Path:
    return att.sandbox.with_name(att.sandbox.name + ".result")


# ------------------------------------------------------------------ its output, as it is written


def open_output(att: Attempt, *, fifo: bool = False) -> int:
    """A pipe for the task's stdout: its reading end becomes ``att.out_fd`` and the writing end
    is returned. ``fifo``: a named one (``stdout_path``) for a process that opens it by name;
    its reading end is opened read-write, so it never blocks the writer's open."""
    if not fifo:
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        att.out_fd = r
        return w
    path = stdout_path(att.sandbox)
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    att.out_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    att.out_fifo = True
    return os.open(path, os.O_WRONLY | os.O_CLOEXEC)


def read_output(att: Attempt, cap: int, limit: int = READ_PER_TURN) -> bool:
    """Take what the task wrote since the last call (at most ``limit`` bytes): keep up to
    ``cap`` bytes, count the rest. True once every writer has closed it."""
    fd = att.out_fd
    if fd is None:
        return True
    got = 0
    while got < limit:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not chunk:
            return True
        got += len(chunk)
        room = cap - len(att.out)
        if room > 0:
            att.out += chunk[:room]
        att.out_dropped += max(0, len(chunk) - max(room, 0))
    return False


def close_output(att: Attempt) -> None:
    if att.out_fd is not None:
        os.close(att.out_fd)
        att.out_fd = None
        if att.out_fifo:
            stdout_path(att.sandbox).unlink(missing_ok=True)
            att.out_fifo = False


# ------------------------------------------------------------------ the end of its process


def reap(att: Attempt, cap: int) -> int:
    """The process has exited: reap it with its resource usage, take the rest of its output.
    Its exit code (negative: killed by that signal)."""
    assert att.proc is not None
    proc, att.proc = att.proc, None  # never signalled again: its pid may be someone else's now
    att.ended = time.perf_counter()
    if isinstance(proc, Forked):
        code = proc.wait()
        usage = proc.usage
    else:
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            usage = (ru.ru_maxrss, ru.ru_utime + ru.ru_stime)
        except ChildProcessError:  # reaped already (by Popen itself)
            code, usage = proc.wait(), None
        proc.returncode = code
    if att.pidfd is not None:
        os.close(att.pidfd)
        att.pidfd = None
    read_output(att, cap, limit=1 << 62)  # everything it wrote before it exited is in the pipe
    close_output(att)
    att.exit_code = code
    wall = att.ended - att.t0
    # The kernel's peak for a child counts the pages it had before its exec (the worker's, for a
    # child forked from it): the peak sampled after the exec is the task's own, when there is one.
    kb = att.peak_kb
    if usage is not None and (not kb or usage[0] > _SELF_PEAK_KB):
        kb = max(kb, usage[0])  # (a figure larger than the worker itself is a descendant's own)
    cpu = usage[1] if usage is not None else 0.0
    att.measured = MeasuredResources(memory=(kb + 1023) // 1024, cpu_time=cpu, wall_time=wall)
    return code


SAMPLE_EVERY = 0.5  # seconds between samples of a running task's peak memory
_SELF_PEAK_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the worker's, at start


def sample_memory(att: Attempt, now: float) -> None:
    """Note the peak resident set so far (VmHWM) of the process and its descendants (the
    largest of them), at most every SAMPLE_EVERY."""
    if att.proc is None or now < att.next_sample:
        return
    att.next_sample = now + SAMPLE_EVERY
    todo, seen = [att.proc.pid], 0
    while todo and seen < 64:
        pid = todo.pop()
        seen += 1
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        att.peak_kb = max(att.peak_kb, int(line.split()[1]))
                        break
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue


def kill_process(proc: subprocess.Popen[bytes] | Forked, pidfd: int | None = None) -> None:
    """SIGKILL the task's whole process group (it runs in a session of its own), and the
    process itself through its pidfd, which cannot name a reused pid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass  # it has exited already


def stdout_path(box: Path) -> Path:
    """Where a sandbox's stdout goes: beside it, so the task never sees the file."""
    return box.with_name(box.name + ".out")


class Sandboxes:
    """Sandbox directories, reused: emptied after each attempt instead of deleted.

    Creating and removing a directory per task costs more than running a short command
    on some filesystems (~0.4 ms on ext4 here); an emptied directory is as good as new.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._free: list[Path] = []
        self._n = 0

    def take(self) -> Path:
        if self._free:
            return self._free.pop()
        self._n += 1
        box = self.root / f"box{self._n}"
        shutil.rmtree(box, ignore_errors=True)  # left over from an earlier run
        box.mkdir()
        return box

    def give_back(self, box: Path) -> None:
        try:
            with os.scandir(box) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
        except OSError:
            shutil.rmtree(box, ignore_errors=True)
            return
        self._free.append(box)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
