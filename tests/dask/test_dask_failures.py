"""A node that raises, a failure next to a healthy graph, a worker killed mid-graph."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import dask
import psutil
import pytest
from dask.delayed import Delayed
from daskgraphs import NodeFailed, fail_on, slow, summed, tree_reduction

from kubevine import LocalCluster, Manager
from kubevine.testing import wait_for


def failing_graph(n: int, bad: int, seconds: float = 0.0) -> dict[Any, Any]:
    dsk: dict[Any, Any] = {("f", i): (fail_on, i, bad) for i in range(n)}
    dsk.update({("s", i): (slow, ("f", i), seconds) for i in range(n)})
    dsk["total"] = (summed, *[("s", i) for i in range(n)])
    return dsk


def test_a_failing_node_raises_its_own_exception_and_the_cluster_keeps_serving(m: Manager) -> None:
    graph = Delayed("total", failing_graph(50, bad=17))
    with pytest.raises(NodeFailed, match="node 17 fails on purpose") as e:
        dask.compute(graph, scheduler=m.get)
    remote = e.value.remote_traceback  # type: ignore[attr-defined]
    assert "in fail_on" in remote and "NodeFailed" in remote
    assert any("('f', 17)" in note for note in e.value.__notes__)  # which dask key raised
    # the manager and the workers keep serving: the same manager computes the next graph
    dsk, root = tree_reduction(100)
    assert m.get(dsk, root) == dask.get(dsk, root)
    assert dask.compute(Delayed("total", failing_graph(10, bad=-1)), scheduler=m.get) == (45.0,)


def test_a_failure_cancels_the_rest_of_its_graph_and_nothing_else(m: Manager) -> None:
    healthy, root = tree_reduction(40, name="healthy")
    healthy.update({("slow", i): (slow, i, 0.05) for i in range(20)})
    healthy["both"] = (summed, root, *[("slow", i) for i in range(20)])
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(m.get(healthy, "both")))
    t.start()
    with pytest.raises(NodeFailed):  # node 5 fails once dozens of this graph's calls are queued
        m.get(failing_graph(40, bad=5, seconds=0.2), "total", retries=0)
    t.join(120)
    assert got == [dask.get(healthy, "both")]  # the other graph on the same manager finished
    # the failed graph's queued calls were cancelled rather than run
    cancelled = wait_for(lambda: m.status().totals.get("cancelled", 0), what="cancelled calls")
    assert cancelled >= 10


def kill_with_its_processes(proc: Any) -> None:
    """SIGKILL a worker and what it started (its library processes), as when its pod dies."""
    parent = psutil.Process(proc.pid)
    victims = [parent, *parent.children(recursive=True)]
    for p in victims:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)


def test_a_worker_killed_mid_graph_leaves_the_result_unchanged(tmp_path: Path) -> None:
    dsk: dict[Any, Any] = {("s", i): (slow, i, 0.1) for i in range(60)}
    dsk["total"] = (summed, *[("s", i) for i in range(60)])
    with (
        LocalCluster(workers=2, workdir=tmp_path, heartbeat_timeout=4.0) as c,
        Manager(c.address, token=c.token) as m,
    ):
        victim = c.workers[0]
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(dask.compute(Delayed("total", dsk), scheduler=m.get)))
        t.start()
        # both workers at work on the graph (so each holds it), then the victim dies
        wait_for(
            lambda: len([w for w in m.status().workers if w.running]) == 2,
            what="both workers running part of the graph",
        )
        kill_with_its_processes(victim)
        t.join(120)
        assert got == [(float(sum(range(60))),)]
        assert [w.id for w in m.status().workers if f"-{victim.pid}-" in w.id] == []
