"""A task that looks for the workflow token everywhere its worker might have left it finds
nothing: not in its environment, not in the worker's /proc environ or command line, not in the
token file named there, for the token given as a file (the worker's own copy) or in $KUBEVINE_TOKEN.

These tests run as root, and root can still read the worker's memory (/proc/<pid>/mem): the
token is protected from tasks of the worker's (non-root) user, which docs/security.md states.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kubevine import LocalCluster, Manager, PythonTask, Task

from .ownworker import OwnWorker

PROBE = r"""
import os, sys
worker = int(sys.argv[1])
seen = [repr(dict(os.environ))]
pid = os.getpid()
while pid > 1:  # this process and its ancestors, up to and including the worker
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    for what in ("environ", "cmdline"):
        try:
            seen.append(open(f"/proc/{pid}/{what}", "rb").read().decode(errors="replace"))
        except OSError as e:
            seen.append(f"{pid}/{what}: {e}")
    if pid == worker:
        break
args = open(f"/proc/{worker}/cmdline", "rb").read().split(b"\0")
for i, a in enumerate(args):
    if a == b"--token-file":
        path = args[i + 1].decode()
        try:
            seen.append(open(path).read())
        except OSError as e:
            seen.append(f"token file {path}: {e}")
print("\n".join(seen))
print("probe done", worker in [int(p) for p in os.listdir("/proc") if p.isdigit()])
"""


@pytest.mark.parametrize("given_as", ["own token file", "environment"])
def test_no_task_finds_the_token(cluster: Callable[..., LocalCluster], tmp_path: Path, given_as: str) -> None:
    def run_probe(worker: int, code: str) -> str:  # (nested: pickled by value)
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code.replace("int(sys.argv[1])", str(worker)), "probe", "exec"), {})
        return buf.getvalue()

    c = cluster(workers=0)
    if given_as == "environment":
        w = OwnWorker(c, tmp_path / "w")
    else:
        own = tmp_path / "worker-token"
        shutil.copy(c.token_file, own)
        own.chmod(0o600)
        w = OwnWorker(c, tmp_path / "w", "--token-file", str(own), "--unlink-token-file", token_in_env=False)
    try:
        with Manager(c.address, token=c.token) as m:
            script = m.declare_buffer(PROBE.encode())
            t = Task(f"python3 probe.py {w.pid}")
            t.add_input(script, "probe.py")
            pt = PythonTask(run_probe, w.pid, PROBE)
            m.submit(t)
            m.submit(pt)
            done = {m.wait(60), m.wait(60)}
            assert done == {t, pt}, [(x.outcome, x.error) for x in (t, pt)]
        assert t.successful(), (t.outcome, t.error, t.output)
        assert "probe done True" in t.output
        assert c.token not in t.output
        assert pt.successful(), (pt.outcome, pt.error)
        assert pt.output is not None and "probe done True" in pt.output
        assert c.token not in pt.output
        assert w.alive()
    finally:
        w.stop()
