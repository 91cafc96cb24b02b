"""A TaskVine program as cctools' test drivers run it: the program starts a manager on a port
and writes the port to a file, a worker started with ``--single-shot`` joins it, and the driver
waits for both to end. The program's manager lives and dies with the program (TaskVine's is
in its process) and the worker leaves as soon as its manager is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from kubevine.testing import wait_for

PROGRAM = """
import kubevine as vine
m = vine.Manager(port=0)
with open("vine.port", "w") as f:
    f.write(str(m.port))
t = vine.Task("echo ran")
m.submit(t)
assert m.wait(60) is t and t.std_output == "ran\\n"
# ends without m.close(), as TaskVine's test scripts do
"""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_program_that_ends_without_closing_its_manager_takes_it_along_and_its_single_shot_worker_leaves(
    tmp_path: Path,
) -> None:
    (tmp_path / "program.py").write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if k != "KUBEVINE_TOKEN"}  # the token is found locally
    program = subprocess.Popen([sys.executable, "program.py"], cwd=tmp_path, env=env)
    worker = None
    try:
        wait_for(lambda: (tmp_path / "vine.port").exists() and (tmp_path / "vine.port").read_text(), 60)
        port = int((tmp_path / "vine.port").read_text())
        workdir = str(tmp_path / "w")
        cmd = [sys.executable, "-m", "kubevine", "worker", "--single-shot", "--timeout=10"]
        worker = subprocess.Popen([*cmd, "--workdir", workdir, "localhost", str(port)], env=env)
        assert program.wait(60) == 0
        ended = time.monotonic()
        assert worker.wait(20) == 0
        # TaskVine's worker leaves when its manager's connection closes, not after a timeout
        assert time.monotonic() - ended < 10
        assert not _listening(port)  # the manager went with the program
    finally:
        for p in (program, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


FORKING = """
import os, sys
import kubevine as vine
m = vine.Manager(port=0, workers=1)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a child of the program leaving normally: the program's manager stays
os.waitpid(pid, 0)
t = vine.Task("echo still here")
m.submit(t)
assert m.wait(60) is t and t.std_output == "still here\\n", (t.result, t.std_output)
"""


def test_a_child_forked_by_the_program_does_not_take_the_manager_along_when_it_exits(tmp_path: Path) -> None:
    (tmp_path / "program.py").write_text(FORKING)
    done = subprocess.run([sys.executable, "program.py"], cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0
