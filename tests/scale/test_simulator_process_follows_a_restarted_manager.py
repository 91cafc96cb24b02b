"""``python -m kubevine.simworker`` as the benchmark runs it: its workers register, report
what they hold to a manager that replaced a killed one, and take work from it."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from kubevine import Manager, Task, keys
from kubevine.admin import Admin
from kubevine.simworker import SimStats
from kubevine.testing import wait_for

from .conftest import TOKEN, Processes, free_port


def stats(path: Path) -> SimStats | None:
    try:
        return SimStats.from_json(path.read_text())
    except (OSError, ValueError):
        return None


def test_simulated_workers_follow_a_manager_killed_and_started_again(
    tmp_path: Path, redis_url: str, workflow_name: str, processes: Processes
) -> None:
    port = free_port()
    manager = ["--name", workflow_name, "--redis", redis_url, "--lease-ttl", "1", "--heartbeat-timeout", "4"]
    first, address = processes.manager(*manager, workdir=tmp_path / "m1", port=port)
    busy_stats, free_stats = tmp_path / "busy.json", tmp_path / "free.json"
    sim = ["-m", "kubevine.simworker", address, "--stats-every", "0.05"]
    busy = ["--workers", "2", "--prefix", "busy", "--duration", "const:600", "--stats", str(busy_stats)]
    processes.start([*sim, *busy], "busy.log")
    with Manager(address, token=TOKEN) as m:
        for _ in range(2):
            m.submit(Task("sleep 600"))
        wait_for(lambda: (s := stats(busy_stats)) and s.tasks == 2, what="both busy workers running a task")
        for _ in range(10):
            m.submit(Task("true"))  # no room: they wait in the store
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.hlen(keys.records(workflow_name)) == 12, what="12 tasks stored")
    r.close()
    processes.kill(first)

    free = processes.start([*sim, "--workers", "1", "--prefix", "free", "--stats", str(free_stats)], "f.log")
    processes.manager(*manager, workdir=tmp_path / "m2", port=port)
    # the waiting tasks now go to the new manager's workers (which ones is placement's business)
    wait_for(lambda: (s := stats(free_stats)) and s.results >= 1, timeout=30, what="the free worker used")

    def busy_back() -> bool:  # welcomed by both managers (a hello may be answered twice)
        s = stats(busy_stats)
        return s is not None and s.welcomes >= 4 and s.registered == 2

    wait_for(busy_back, timeout=30, what="both busy workers welcomed by the new manager")
    admin = Admin(address, TOKEN)
    wait_for(lambda: admin.status().tasks.get("running") == 2, what="their 2 tasks re-attached")
    st = admin.status()
    assert {w.id for w in st.workers} == {"busy-0", "busy-1", "free-0"}
    assert st.tasks.get("running") == 2

    free.send_signal(signal.SIGTERM)
    assert free.wait(10) == 0
    final = stats(free_stats)
    assert final is not None and final.results >= 1 and final.registered == 1
    assert final.first_dispatch is not None and final.samples  # the last write holds the series
