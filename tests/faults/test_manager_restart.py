"""The manager is SIGKILLed mid-run and started again on its Redis state: every task
completes exactly once, the workers were never restarted, and the client's wait() goes on;
also when the new manager loads the tasks in slices while it serves (as it does for a large
store). A second manager on a live workflow is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubevine import FunctionCall, Manager, Task
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, count_runs, kubevine_env, record, runs_command, tx_lines

N_CMD, N_CALL = 1500, 3500  # 5,000 tasks


@pytest.mark.parametrize("restore", ["whole", "slices"])
def test_killed_manager_restarts_from_redis_and_every_task_completes_once(
    tmp_path: Path, redis_url: str, workflow_name: str, restore: str
) -> None:
    procs = Procs(tmp_path)
    runs = tmp_path / "runs"
    try:
        address = procs.manager(redis_url, workflow_name)
        port = int(address.rsplit(":", 1)[1])
        for i in range(2):
            procs.worker(address, i)
        pids = [w.pid for w in procs.workers]
        with Manager(address, token=TOKEN, client="analyst") as m:
            m.install_library(m.create_library_from_functions("rec", record, exec_mode="direct"))
            tasks: list[Task] = []
            for i in range(N_CMD + N_CALL):  # interleaved: both kinds are in flight at the kill
                if i % 10 < 3:
                    tasks.append(Task(runs_command(i, runs)))
                else:
                    tasks.append(FunctionCall("rec", "record", i, str(runs)))
            for t in tasks:
                m.submit(t)
            got = []
            while len(got) < (N_CMD + N_CALL) // 2:
                t = m.wait(60)
                assert t is not None
                got.append(t)
            before_kill = len(got)
            procs.kill_manager()
            ran_at_kill = set(count_runs(runs))  # (and a little after: workers go on with theirs)
            sliced = ["--restore-at-once", "0"] if restore == "slices" else []
            procs.manager(redis_url, workflow_name, *sliced, port=port)
            while (t := m.wait(120)) is not None:
                got.append(t)
        assert len(got) == N_CMD + N_CALL and len({t.id for t in got}) == len(got)  # each exactly once
        assert all(t.successful() for t in got), [t.error for t in got if not t.successful()][:3]
        for i, t in enumerate(tasks):  # outputs correct, each from its own task
            assert t.output == (i * i if isinstance(t, FunctionCall) else f"out{i}\n")
        assert [w.pid for w in procs.workers] == pids and all(w.poll() is None for w in procs.workers)
        log = tmp_path / "manager-1.log"
        if restore == "slices":  # it served while it loaded, and loads everything (the client
            # may have had every result before the load ended: the manager goes on without it)
            wait_for(lambda: " task(s) loaded, in " in log.read_text(), 60, what="the whole store loaded")
            said = log.read_text()
            assert "serving while they load" in said, said[-2000:]
            loaded = said.split("all ", 1)[1].split(" task(s) loaded, in ", 1)
            assert int(loaded[0]) > 0 and int(loaded[1].split()[0]) > 1, said[-2000:]
        else:
            assert "serving while they load" not in log.read_text()

        # re-executions: only tasks the workers held when the manager died
        counts = count_runs(runs)
        assert len(counts) == N_CMD + N_CALL  # every task ran
        re_executed = sum(n - 1 for n in counts.values())
        log = tx_lines(tmp_path / "m" / "transactions.log")  # both managers append to it
        start = [ts for ts, text in log if text.startswith("MANAGER ") and " started " in text][-1]
        second = [(ts, text) for ts, text in log if ts >= start]
        held = sum(
            int(text.split(" running=")[1].split()[0])
            for _, text in second
            if text.startswith("WORKER ") and " connected " in text
        )
        assert re_executed <= held
        # manager start (lease taken, port bound, before the state loads) -> first dispatch of the
        # new manager. Workers queue work ahead and may finish what they hold before the client
        # has taken the results: then the new manager has nothing to dispatch, only results to
        # take and pass on, and whatever ran after the kill ran on a worker that held it.
        dispatches = [ts for ts, text in second if " dispatched " in text]
        if not dispatches:
            after = len(set(counts) - ran_at_kill)
            assert after <= held, (after, held, before_kill)
            print(f"re-executed {re_executed} of {held} held; {after} ran after the kill; none dispatched")
            return
        recovery = min(dispatches) - start
        print(f"re-executed {re_executed} of {held} held by workers; start->dispatch {recovery:.3f}s")
        assert recovery < 5.0  # target 2 s; loose for a loaded 2-core machine
    finally:
        procs.stop()


def test_a_second_manager_on_a_live_workflow_is_refused_clearly(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    procs = Procs(tmp_path)
    try:
        procs.manager(redis_url, workflow_name)
        args = [sys.executable, "-m", "kubevine", "manager", "--host", "127.0.0.1", "--port", "0"]
        args += ["--name", workflow_name, "--redis", redis_url, "--workdir", str(tmp_path / "m2")]
        args += ["--lease-ttl", "1"]
        out = subprocess.run(args, env=kubevine_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 3
        assert "driven by another live manager" in out.stderr and "lease" in out.stderr
        assert procs.managers[0].poll() is None  # the first one is unharmed
    finally:
        procs.stop()
