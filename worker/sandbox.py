"""Running one command task in a sandbox directory of its own.

The sandbox holds the task's inputs under their remote names; the command runs there with
its environment, stdout and stderr captured (up to a cap); declared outputs are collected
from it afterwards. The sandbox is removed when the attempt ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import filetree
from kubevine.protocol import Assignment, AttemptResult, FileKind, Outcome, OutputFile, TaskKind
from kubevine.worker.pystarter import Forked, Starter

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
    frames: list[bytes] = field(default_factory=list)

    def result(self, outcome: Outcome, **kw: object) -> AttemptResult:
        a = self.assignment
        return AttemptResult(
            task_id=a.spec.id,
            attempt=a.attempt,
            outcome=outcome,
            started=self.started,
            wall_time=time.perf_counter() - self.t0 if self.t0 else 0.0,
            **kw,
        )


def start_command(
    att: Attempt, base_env: Mapping[str, str], *, force_shell: bool = False, argv: list[str] | None = None
) -> AttemptResult | None:
    """Start the command in its sandbox without waiting; a result only if it cannot start.

    A command without shell syntax is exec'd directly; one that is not found is handed
    to the shell so that the user sees the shell's own message and exit code 127.
    """
    spec = att.assignment.spec
    env = _begin(att, base_env)
    if argv is None and not force_shell:
        argv = argv_for(spec.command or "")
    try:
        with open(stdout_path(att.sandbox), "wb") as out:
            att.proc = subprocess.Popen(
                argv if argv is not None else spec.command or "",
                shell=argv is None,
                cwd=att.sandbox,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
    except FileNotFoundError:
        if argv is None:
            return att.result(Outcome.SANDBOX_ERROR, error="could not start /bin/sh")
        return start_command(att, base_env, force_shell=True)
    except OSError as e:
        return att.result(Outcome.SANDBOX_ERROR, error=f"could not start the command: {e}")
    att.pidfd = os.pidfd_open(att.proc.pid)
    return None


def _begin(att: Attempt, base_env: Mapping[str, str]) -> dict[str, str]:
    """Start the attempt's clocks; the environment its process gets."""
    spec = att.assignment.spec
    att.started = time.time()
    att.t0 = time.perf_counter()
    if spec.time_max:
        att.deadline = att.t0 + spec.time_max
    env = dict(base_env)
    env.update(spec.env)
    return env


# Variables an interpreter reads as it starts: a task that sets one gets a new interpreter
# rather than a child forked from the starter, which started without them.
_START_VARS = ("PYTHON", "LD_", "LC_", "LANG")


def start_python(
    att: Attempt, base_env: Mapping[str, str], payload: bytes, starter: Starter | None = None
) -> AttemptResult | None:
    """Start a PythonTask: an interpreter of its own in the sandbox runs the pickled function,
    forked from the worker's starter when there is one (see ``worker/pystarter.py``)."""
    att.payload_path = att.sandbox.with_name(att.sandbox.name + ".payload")
    att.payload_path.write_bytes(payload)
    result = att.sandbox.with_name(att.sandbox.name + ".result")
    result.unlink(missing_ok=True)
    spec = att.assignment.spec
    if starter is not None and not any(k.startswith(_START_VARS) for k in spec.env):
        env = _begin(att, base_env)
        att.proc = starter.start(att.sandbox, env, att.payload_path, result, stdout_path(att.sandbox))
        if att.proc is not None:
            try:
                att.pidfd = os.pidfd_open(att.proc.pid)  # the starter keeps it unreaped until we ask
                return None
            except OSError:  # cannot watch it (the starter died and it was reaped, or no fds)
                kill_process(att.proc)
                att.proc.wait()
                att.proc = None  # started again below as a new interpreter
    argv = [sys.executable, "-m", "kubevine.worker.pyrunner", str(att.payload_path), str(result)]
    return start_command(att, base_env, argv=argv)


def finish_command(att: Attempt, stdout_cap: int) -> AttemptResult:
    """The process has exited: reap it, collect stdout and outputs, judge the attempt."""
    assert att.proc is not None
    code = att.proc.wait()
    if att.pidfd is not None:
        os.close(att.pidfd)
        att.pidfd = None
    spec = att.assignment.spec
    timed_out = att.deadline is not None and time.perf_counter() >= att.deadline
    if spec.kind == TaskKind.PYTHON:
        return _finish_python(att, code, stdout_cap, timed_out)
    att.frames.append(_read_capped(stdout_path(att.sandbox), stdout_cap))
    if timed_out and code != 0:
        return att.result(
            Outcome.MAX_WALL_TIME,
            exit_code=code,
            output_frame=0,
            error=f"ran longer than its time limit of {spec.time_max}s",
        )
    outputs, missing = _collect_outputs(att)
    if code != 0:
        outcome, err = Outcome.EXIT_NONZERO, f"exit code {code}"
    elif missing:
        outcome, err = Outcome.OUTPUT_MISSING, f"output(s) not produced: {', '.join(missing)}"
    else:
        outcome, err = Outcome.SUCCESS, None
    return att.result(outcome, exit_code=code, output_frame=0, error=err, outputs=outputs)


def _collect_outputs(att: Attempt) -> tuple[list[OutputFile], list[str]]:
    """The declared outputs found in the sandbox (temps stay here: the worker caches them;
    the others travel to the client as frames), and the names of those not produced."""
    outputs: list[OutputFile] = []
    missing: list[str] = []
    for b in att.assignment.spec.outputs:
        p = att.sandbox / b.remote_name
        if not p.exists():
            missing.append(b.remote_name)
            continue
        if b.kind == FileKind.TEMP:  # stays on this worker: the worker caches it
            outputs.append(OutputFile(remote_name=b.remote_name, cache_name=b.cache_name))
            continue
        is_dir = p.is_dir()
        data = filetree.pack(p) if is_dir else p.read_bytes()
        o = OutputFile(remote_name=b.remote_name, size=len(data), directory=is_dir)
        if b.to_client:
            att.frames.append(data)
            o.frame = len(att.frames) - 1
        outputs.append(o)
    return outputs, missing


def _finish_python(att: Attempt, code: int, stdout_cap: int, timed_out: bool) -> AttemptResult:
    result = att.sandbox.with_name(att.sandbox.name + ".result")
    try:
        data = result.read_bytes()
    except OSError:
        data = b""
    finally:
        result.unlink(missing_ok=True)
        if att.payload_path is not None:
            att.payload_path.unlink(missing_ok=True)
    if timed_out:
        limit = att.assignment.spec.time_max
        return att.result(
            Outcome.MAX_WALL_TIME, exit_code=code, error=f"ran longer than its time limit of {limit}s"
        )
    if not data:
        out = _read_capped(stdout_path(att.sandbox), stdout_cap).decode(errors="replace")
        return att.result(
            Outcome.SANDBOX_ERROR,
            exit_code=code,
            error=f"the Python process ended with code {code} before returning a result:\n{out[-2000:]}",
        )
    att.frames.append(data[1:])
    if data[:1] != b"1":
        return att.result(Outcome.EXCEPTION, exit_code=code, output_frame=0)
    outputs, missing = _collect_outputs(att)  # declared outputs, as for a command
    if missing:
        return att.result(
            Outcome.OUTPUT_MISSING,
            exit_code=code,
            output_frame=0,
            error=f"output(s) not produced: {', '.join(missing)}",
            outputs=outputs,
        )
    return att.result(Outcome.SUCCESS, exit_code=code, output_frame=0, outputs=outputs)


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


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        size = path.stat().st_size
        data = data[:cap] + f"\n[kubevine: output truncated at {cap} of {size} bytes]\n".encode()
    return data


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
