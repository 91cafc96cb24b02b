"""The client process itself is SIGKILLed mid-run; a new process reattaches to the workflow
under the same client name (``Manager(address, client=..., attach=True)``) and collects every
result the dead one had not — including those that completed while no client was there."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kubevine import Manager
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, kubevine_env

N = 300

CLIENT = """
import sys
from kubevine import Manager, Task
address, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
m = Manager(address, token=token, client="notebook")
tasks = [Task(f"sleep 0.02; echo {i}") for i in range(int(sys.argv[4]))]
for t in tasks:
    m.submit(t)
with open(out + ".ids", "w") as f:
    f.write(" ".join(str(t.id) for t in tasks))
with open(out, "a") as f:
    while (t := m.wait(60)) is not None:
        f.write(f"{t.id} {t.output.strip()}\\n")
        f.flush()
"""


def test_a_killed_client_process_is_replaced_and_collects_every_result(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    procs = Procs(tmp_path)
    out = tmp_path / "collected"
    try:
        address = procs.manager(redis_url, workflow_name)
        for i in range(2):
            procs.worker(address, i)
        args = [sys.executable, "-c", CLIENT, address, TOKEN, str(out), str(N)]
        client = subprocess.Popen(args, env=kubevine_env())
        procs.others.append(client)

        def collected() -> int:
            return len(out.read_text().splitlines()) if out.exists() else 0

        wait_for(lambda: collected() >= 100, timeout=60, what="the first client to collect 100 results")
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        ids = {int(x) for x in (tmp_path / "collected.ids").read_text().split()}
        before = {int(line.split()[0]): line.split()[1] for line in out.read_text().splitlines()}
        assert len(ids) == N and 100 <= len(before) < N

        with Manager(address, token=TOKEN, client="notebook", attach=True) as m:
            attached = {t.id for t in m.attached}
            # everything the dead process had not collected (and at most what it had
            # collected but not yet acknowledged when it died)
            assert ids - set(before) <= attached
            got = list(m)
            assert m.empty()
            # an attached task lacks what it ran with: resubmitting it is refused, not run wrongly
            with pytest.raises(ValueError, match="attached from an earlier client process"):
                m.submit(got[0])
        assert {t.id for t in got} == attached
        for t in got:  # each output belongs to its own command
            assert t.command is not None and t.output == t.command.rsplit("echo ", 1)[1] + "\n"
        assert set(before) | {t.id for t in got} == ids  # nothing is missing
        # repeats: only results not yet acknowledged when the process died
        assert len(set(before) & {t.id for t in got}) <= 50
    finally:
        procs.stop()
