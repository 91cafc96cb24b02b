"""A real run is its event log: a manager serving real workers and a real client records
every event its core handles; replayed into a fresh core, the log gives the same task and
worker states, the same writes and instructions at every cycle, and the same transactions-log
lines the manager wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from kubevine import Manager, Task, auth, logs, txformat
from kubevine.admin import Admin
from kubevine.manager.core import Core, Journal, Taken, replay
from kubevine.manager.service import ManagerConfig, ManagerService
from kubevine.manager.states import TaskState
from kubevine.resources import Tally
from kubevine.testing import wait_for

STATE = (
    "now",
    "tasks",
    "workers",
    "libraries",
    "ready",
    "counts",
    "totals",
    "unschedulable",
    "known_files",
    "producers",
    "waiting_for",
    "undeclared",
    "undeclare_later",
    "connected_clients",
    "next_task_id",
    "avg_wall",
    "moved",
)


def plain(x: Any) -> Any:
    """``x`` as values that compare by content (a resource tally compares by identity)."""
    if isinstance(x, Tally):
        return x.snapshot()
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: plain(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


def state_of(core: Core) -> dict[str, Any]:
    state = {name: plain(getattr(core, name)) for name in STATE}
    state["catalog"] = {k: plain(v) for k, v in vars(core.catalog).items()}
    return state


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ManagerService, str]]:
    """A recording manager in this process, on its own thread; stopped and closed afterwards."""
    token = auth.generate_token()
    cfg = ManagerConfig(
        name=f"replay-{os.getpid()}",
        host="127.0.0.1",
        port=0,
        token=token,
        workdir=tmp_path / "manager",
        heartbeat_interval=0.5,
        heartbeat_timeout=3.0,
    )
    svc = ManagerService(cfg, record=True)
    svc.start()
    loop = threading.Thread(target=svc.loop, name="manager-loop", daemon=True)
    loop.start()
    try:
        yield svc, token
    finally:
        svc.running = False
        loop.join(10)
        svc.close()
        logs.bind(workflow=None, manager=None)


def start_worker(address: str, token_file: Path, workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "kubevine", "--log-level", "WARNING", "worker", address, "--cores", "1"]
    cmd += ["--memory", "1000", "--disk", "1000", "--workdir", str(workdir), "--token-file", str(token_file)]
    with open(workdir / "worker.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def test_a_run_with_a_killed_worker_replays_to_the_same_states_and_instructions(
    served, tmp_path: Path
) -> None:
    svc, token = served
    token_file = auth.write_token(tmp_path / "token", token)
    workers = [start_worker(svc.address, token_file, tmp_path / f"worker-{i}") for i in range(2)]
    try:
        admin = Admin(svc.address, token)
        wait_for(lambda: len(admin.status().workers) == 2, timeout=30, what="two workers")
        with Manager(svc.address, token=token) as m:
            slow = Task("sleep 2; echo slow")
            m.submit(slow)
            # the worker running it is killed: it goes silent, is declared lost, the task reruns
            holder = wait_for(
                lambda: next((w.id for w in admin.status().workers if w.running), None), timeout=30
            )
            victim = next(p for p in workers if f"-{p.pid}-" in holder)
            victim.send_signal(signal.SIGKILL)
            quick = [Task(f"echo {i}") for i in range(20)]
            flaky = Task("exit 3")
            flaky.set_retries(1)
            for t in [*quick, flaky]:
                m.submit(t)
            got = {id(t) for t in iter(lambda: m.wait(60), None)}
            assert got == {id(t) for t in [slow, *quick, flaky]}
            assert slow.output == "slow\n" and [t.output for t in quick] == [f"{i}\n" for i in range(20)]
            assert flaky.exit_code == 3
        wait_for(lambda: not admin.status().clients, timeout=30, what="the client's goodbye")
    finally:
        for p in workers:
            if p.poll() is None:
                p.terminate()
            p.wait(10)
    svc.running = False  # stop the loop before reading what it recorded
    wait_for(lambda: not any(t.name == "manager-loop" for t in threading.enumerate()), timeout=10)

    journal = svc.core.journal
    assert isinstance(journal, Journal)
    recorded = [e for e in journal.entries if isinstance(e, Taken)]
    again, taken = replay(journal)
    assert len(taken) == len(recorded) > 10
    assert taken == recorded  # the same writes and instructions at every cycle
    assert state_of(again) == state_of(svc.core)
    assert again.totals["retried"] >= 1 and again.counts[TaskState.DONE] + again.totals["done"] >= 21
    # the lines the manager logged from its core are the lines the replay makes
    svc.txlog.flush()
    logged = [
        line.split(" ", 2)[2]
        for line in (svc.config.workdir / "transactions.log").read_text().splitlines()
        if txformat.parse_line(line).kind != "MANAGER"
    ]
    assert logged == again.transactions
    assert any(" disconnected " in line and "silent" in line for line in logged)  # the loss was replayed
