"""Tasks a real client submits run on simulated workers and come back exactly once, and
every result is acknowledged to its worker, mostly on the dispatches that go there anyway."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from kubevine import LocalCluster, Manager, PythonTask, Task
from kubevine.simworker import Simulator, parse_duration
from kubevine.testing import wait_for


def square(x: int) -> int:
    return x * x


def test_every_task_from_a_real_client_completes_exactly_once(
    cluster: Callable[..., LocalCluster],
    simulate: Callable[..., Simulator],
    client: Callable[..., Manager],
) -> None:
    c = cluster()
    sim = simulate(
        c.address, c.token, workers=20, duration=parse_duration("uniform:0:0.004", seed=1), run_functions=True
    )
    m = client(c.address, c.token)
    commands = [m.submit(Task("true")) for _ in range(2000)]
    pythons = {m.submit(PythonTask(square, i)): i * i for i in range(50)}
    seen: Counter[int] = Counter()
    where: set[str] = set()
    while (t := m.wait(30)) is not None:
        assert t.successful(), (t.id, t.result, t.error)
        assert t.attempts == 1
        seen[t.id] += 1
        where.add(t.worker or "")
        if t.id in pythons:
            assert t.output == pythons[t.id]
    assert seen == Counter([*commands, *pythons])  # each task once, none missing
    stats = sim.snapshot()
    assert stats.tasks == stats.results == 2050  # each dispatched and reported once
    assert len(where) > 1 and where <= {f"sim-{i}" for i in range(20)}
    # each result acknowledged once the manager stored it (so the worker forgets it); while
    # work keeps going to a worker, its acknowledgements ride on those dispatches
    wait_for(
        lambda: (s := sim.snapshot()).acked_alone + s.acked_on_dispatch >= 2050, 10, what="every result acked"
    )
    stats = sim.snapshot()
    assert stats.acked_alone + stats.acked_on_dispatch == 2050
    assert stats.acked_on_dispatch > 4 * stats.acked_alone, (stats.acked_on_dispatch, stats.acked_alone)
