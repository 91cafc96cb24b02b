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
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubevine.protocol import Assignment, AttemptResult, Outcome, OutputFile

STDOUT_NAME = ".kubevine-stdout"


@dataclass
class Attempt:
    """One running attempt, as the worker's executor thread sees it."""

    assignment: Assignment
    sandbox: Path
    proc: subprocess.Popen[bytes] | None = None
    killed: bool = False
    frames: list[bytes] = field(default_factory=list)


def run_command(
    att: Attempt, base_env: Mapping[str, str], stdout_cap: int
) -> AttemptResult:
    """Run the attempt's command to the end; never raises for a task's own failure."""
    a = att.assignment
    spec = a.spec
    started = time.time()
    t0 = time.perf_counter()
    env = dict(base_env)
    env.update(spec.env)
    out_path = att.sandbox / STDOUT_NAME

    def result(outcome: Outcome, **kw: object) -> AttemptResult:
        return AttemptResult(
            task_id=spec.id,
            attempt=a.attempt,
            outcome=outcome,
            started=started,
            wall_time=time.perf_counter() - t0,
            **kw,  # type: ignore[arg-type]
        )

    try:
        with open(out_path, "wb") as out:
            att.proc = subprocess.Popen(
                spec.command or "",
                shell=True,
                cwd=att.sandbox,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            if att.killed:  # killed while we were starting it
                _kill(att.proc)
            try:
                code = att.proc.wait(timeout=spec.time_max)
            except subprocess.TimeoutExpired:
                _kill(att.proc)
                att.proc.wait()
                return result(
                    Outcome.MAX_WALL_TIME,
                    error=f"ran longer than its time limit of {spec.time_max}s",
                )
    except OSError as e:
        return result(Outcome.SANDBOX_ERROR, error=f"could not start the command: {e}")
    stdout = _read_capped(out_path, stdout_cap)
    att.frames.append(stdout)
    outputs: list[OutputFile] = []
    missing: list[str] = []
    for b in spec.outputs:
        p = att.sandbox / b.remote_name
        if not p.exists():
            missing.append(b.remote_name)
            continue
        if p.is_dir():
            data = _pack_dir(p)
        else:
            data = p.read_bytes()
        o = OutputFile(remote_name=b.remote_name, size=len(data))
        if b.to_client:
            att.frames.append(data)
            o = o.model_copy(update={"frame": len(att.frames) - 1})
        outputs.append(o)
    if code != 0:
        outcome = Outcome.EXIT_NONZERO
        err = f"exit code {code}"
    elif missing:
        outcome = Outcome.OUTPUT_MISSING
        err = f"output(s) not produced: {', '.join(missing)}"
    else:
        outcome, err = Outcome.SUCCESS, None
    return result(outcome, exit_code=code, output_frame=0, error=err, outputs=outputs)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill(att: Attempt) -> None:
    att.killed = True
    if att.proc is not None and att.proc.returncode is None:
        _kill(att.proc)


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        size = path.stat().st_size
        data = data[:cap] + f"\n[kubevine: output truncated at {cap} of {size} bytes]\n".encode()
    return data


def _pack_dir(p: Path) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(p, arcname=".")
    return buf.getvalue()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
