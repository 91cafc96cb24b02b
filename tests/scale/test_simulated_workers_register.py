"""N simulated workers say hello as real workers do, and the manager counts them."""

from __future__ import annotations

from collections.abc import Callable

from kubevine import LocalCluster
from kubevine.admin import Admin
from kubevine.simworker import Simulator
from kubevine.testing import wait_for


def test_simulated_workers_register_and_the_status_shows_them(
    cluster: Callable[..., LocalCluster], simulate: Callable[..., Simulator]
) -> None:
    c = cluster()
    sim = simulate(c.address, c.token, workers=60, cores=2, memory=2048)
    admin = Admin(c.address, c.token)
    workers = wait_for(
        lambda: ws if len(ws := admin.status().workers) == 60 else None, what="60 workers in the status"
    )
    assert {w.id for w in workers} == {f"sim-{i}" for i in range(60)}
    assert all(w.state == "connected" and w.resources.cores == 2 for w in workers)
    assert all(w.resources.memory == 2048 for w in workers)
    wait_for(lambda: sim.snapshot().registered == 60, what="every welcome read by the simulator")
