"""A simulated worker that stops heartbeating is declared lost; its tasks run elsewhere."""

from __future__ import annotations

from collections.abc import Callable

from kubevine import LocalCluster, Manager, Task
from kubevine.admin import Admin
from kubevine.simworker import Simulator, parse_duration
from kubevine.testing import wait_for


def test_a_simulated_worker_that_stops_heartbeating_is_lost_and_its_tasks_rerun(
    cluster: Callable[..., LocalCluster],
    simulate: Callable[..., Simulator],
    client: Callable[..., Manager],
) -> None:
    c = cluster(heartbeat_timeout=2)
    sim = simulate(c.address, c.token, workers=3, duration=parse_duration("const:0.2"))
    m = client(c.address, c.token)
    ids = [m.submit(Task("true")) for _ in range(30)]
    victim = sim.by_id["sim-0"]  # type: ignore[index]
    wait_for(lambda: victim.running, what="a task running on sim-0")
    sim.silence("sim-0")
    turns = sim.turns
    wait_for(lambda: sim.turns > turns + 1, what="a simulator turn after the silence")
    held = {tid for tid, _ in victim.running} | {r.a.spec.id for r in victim.queue}
    assert held

    admin = Admin(c.address, c.token)
    wait_for(
        lambda: "sim-0" not in {w.id for w in admin.status().workers}, timeout=15, what="sim-0 declared lost"
    )
    done = {}
    while (t := m.wait(30)) is not None:
        assert t.successful(), (t.id, t.result, t.error)
        done[t.id] = t
    assert set(done) == set(ids)
    for tid in held:
        assert done[tid].worker != "sim-0" and done[tid].attempts >= 2, (tid, done[tid].worker)
