"""Chaos: during a 2,000-task run (commands and function calls), seeded random SIGKILLs of
workers (each replaced by a fresh one) and one of the manager (restarted on its Redis
state). Bounded in time; every result is present once and correct."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from kubevine import FunctionCall, Manager, Task

from .procs import TOKEN, Procs, record

SEED = 20261125
N = 2000
DEADLINE = 120.0  # seconds for the whole run, kills included


def test_random_kills_of_workers_and_the_manager_lose_nothing(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    rng = random.Random(SEED)
    procs = Procs(tmp_path)
    # after how many results each kill happens: four workers, one manager
    events = sorted((n, "worker") for n in rng.sample(range(100, N - 200), 4))
    events.append((rng.randrange(N // 3, 2 * N // 3), "manager"))
    events.sort()
    log: list[str] = []
    try:
        address = procs.manager(redis_url, workflow_name, "--recover-grace", "5")
        port = int(address.rsplit(":", 1)[1])
        next_worker = 0
        live = []
        for _ in range(3):
            procs.worker(address, next_worker)
            live.append(procs.workers[-1])
            next_worker += 1
        start = time.monotonic()
        with Manager(address, token=TOKEN, client="chaos") as m:
            m.install_library(m.create_library_from_functions("rec", record, exec_mode="direct"))
            tasks: list[Task] = []
            for i in range(N):
                runs = str(tmp_path / "runs")
                t: Task = Task(f"echo {i}") if i % 2 else FunctionCall("rec", "record", i, runs)
                tasks.append(t)
                m.submit(t)
            got: list[Task] = []
            while len(got) < N:
                if time.monotonic() - start > DEADLINE:
                    missing = sorted({t.id for t in tasks} - {t.id for t in got})  # type: ignore[type-var]
                    raise AssertionError(f"{len(got)} of {N} in {DEADLINE}s; missing {missing[:20]}; {log}")
                while events and len(got) >= events[0][0]:
                    _, what = events.pop(0)
                    if what == "worker":
                        victim = live.pop(rng.randrange(len(live)))
                        victim.send_signal(signal.SIGKILL)
                        victim.wait(10)
                        procs.worker(address, next_worker)  # a fresh worker takes its place
                        live.append(procs.workers[-1])
                        next_worker += 1
                    else:
                        procs.kill_manager()
                        procs.manager(redis_url, workflow_name, "--recover-grace", "5", port=port)
                    log.append(f"{what} killed at {len(got)} results, {time.monotonic() - start:.1f}s")
                t = m.wait(1)
                if t is not None:
                    got.append(t)
        print(f"seed {SEED}: {'; '.join(log)}; done in {time.monotonic() - start:.1f}s")
        assert len(log) == 5
        assert len(got) == N and len({t.id for t in got}) == N
        bad = [(t.id, t.outcome, t.error) for t in got if not t.successful()]
        assert not bad, bad[:5]
        for i, t in enumerate(tasks):
            assert t.output == (f"{i}\n" if i % 2 else i * i)
    finally:
        procs.stop()
