"""Redis dies under a running workflow.

- Killed and restarted empty (no persistence): the manager keeps dispatching from memory,
  then writes its whole state into the new Redis; every task completes exactly once.
- Away longer than --redis-outage-grace: new work is refused with a clear, typed error
  (``StoreUnavailable``), work already accepted goes on, and once Redis is back the refused
  tasks can be submitted again.
- Killed with AOF (everysec) and restarted on the same directory, once alone and once
  together with the manager: the run completes; nothing acknowledged was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevine import Manager, StoreUnavailable, Task, keys
from kubevine.cli.statusview import render
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, RedisServer, count_runs, runs_command

WF = "outage"


def _collect(m: Manager, got: list[Task], n: int, timeout: float = 60) -> None:
    while len(got) < n:
        t = m.wait(timeout)
        assert t is not None, f"only {len(got)} of {n} results"
        got.append(t)


def test_redis_restarted_empty_mid_run_the_manager_writes_its_state_again(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis")
    rs.start()
    procs = Procs(tmp_path)
    try:
        address = procs.manager(rs.url, WF, "--redis-outage-grace", "60")
        for i in range(2):
            procs.worker(address, i)
        with Manager(address, token=TOKEN, client="c") as m:
            tasks = [Task(f"sleep 0.01; echo {i}") for i in range(300)]
            for t in tasks:
                m.submit(t)
            got: list[Task] = []
            _collect(m, got, 80)
            rs.kill()
            _collect(m, got, 160)  # dispatching goes on from memory while Redis is away
            extra = [Task(f"echo late{i}") for i in range(20)]  # new work, within the grace
            for t in extra:
                m.submit(t)
            rs.start()  # a new, empty Redis on the same port
            r = rs.client()
            wait_for(lambda: r.get(keys.epoch(WF)) is not None, timeout=30, what="the state written again")
            while (t := m.wait(60)) is not None:
                got.append(t)
            # what is still uncollected in the new Redis is the manager's whole state
            assert int(r.get(keys.epoch(WF)) or 0) >= 1
            r.close()
        assert len(got) == 320 and len({t.id for t in got}) == 320
        assert sorted(t.output for t in tasks) == sorted(f"{i}\n" for i in range(300))
        assert [t.output for t in extra] == [f"late{i}\n" for i in range(20)]
        log = (tmp_path / "manager-0.log").read_text()
        assert "state store unavailable" in log and "writing the whole workflow state again" in log
        assert procs.managers[0].poll() is None  # it never died
    finally:
        procs.stop()
        rs.stop()


def test_past_the_outage_grace_new_work_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis", aof=True)
    rs.start()
    procs = Procs(tmp_path)
    try:
        address = procs.manager(rs.url, WF, "--redis-outage-grace", "1")
        procs.worker(address, 0)
        with Manager(address, token=TOKEN, client="c") as m:
            running = Task("sleep 6; echo survived")
            m.submit(running)
            wait_for(lambda: m.status().tasks.get("running", 0) == 1, timeout=30, what="task running")
            rs.kill()
            wait_for(
                lambda: "refusing new work" in (tmp_path / "manager-0.log").read_text(),
                timeout=30,
                what="the manager to give up waiting",
            )
            st = m.status()  # the manager answers from memory, and says what is wrong
            assert st.refusing_work and st.store_outage > 1
            assert "STATE STORE UNREACHABLE" in render(st) and "new work is refused" in render(st)
            with pytest.raises(StoreUnavailable, match="can be welcomed only once it is back"):
                Manager(address, token=TOKEN, client="newcomer", connect_timeout=20)
            refused = Task("echo refused")
            m.submit(refused)
            with pytest.raises(StoreUnavailable) as err:
                m.wait(30)
            assert "state store has been unreachable" in str(err.value)
            assert "--redis-outage-grace" in str(err.value)
            assert err.value.tasks == [refused] and refused.state == "refused"
            done = m.wait(30)  # accepted work went on meanwhile
            assert done is running and done.output == "survived\n"
            rs.start()
            wait_for(
                lambda: "accepting new work again" in (tmp_path / "manager-0.log").read_text(),
                timeout=30,
                what="the manager to accept work again",
            )
            st = m.status()
            assert not st.refusing_work and st.store_outage == 0
            m.submit(refused)  # the same task, again
            again = m.wait(30)
            assert again is refused and refused.output == "refused\n"
    finally:
        procs.stop()
        rs.stop()


def test_redis_killed_with_aof_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis", aof=True)
    rs.start()
    procs = Procs(tmp_path)
    runs = tmp_path / "runs"
    n = 400
    try:
        address = procs.manager(rs.url, WF)
        port = int(address.rsplit(":", 1)[1])
        for i in range(2):
            procs.worker(address, i)
        with Manager(address, token=TOKEN, client="c") as m:
            tasks = [Task(runs_command(i, runs)) for i in range(n)]
            for t in tasks:
                m.submit(t)
            got: list[Task] = []
            _collect(m, got, 100)
            rs.kill()  # Redis alone: the manager rides it out
            rs.start()
            _collect(m, got, 250)
            # then Redis and the manager together (a node lost): what Redis acknowledged
            # before dying is all the new manager has
            rs.kill()
            procs.kill_manager()
            rs.start()
            procs.manager(rs.url, WF, port=port)
            while (t := m.wait(60)) is not None:
                got.append(t)
        assert len(got) == n and len({t.id for t in got}) == n
        assert [t.output for t in tasks] == [f"out{i}\n" for i in range(n)]
        counts = count_runs(runs)
        assert len(counts) == n
        # a result a worker was told to forget (acknowledged as stored) never runs again:
        # re-runs are bounded by what two 1-core workers can hold (4 tasks each with queueing)
        assert sum(c - 1 for c in counts.values()) <= 8
        assert all(w.poll() is None for w in procs.workers)
    finally:
        procs.stop()
        rs.stop()
