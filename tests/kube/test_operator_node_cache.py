"""Worker pods on one node share that node's cache: a file one worker fetched is already
there for the next worker the operator starts on the node, and it travels to the node once.

The operator mounts `workers.nodeCache.hostPath` into every worker pod as its cache
directory, and the process kubelet maps a hostPath to one directory per node — so this
exercises what a cluster does: the second worker reports the file as cached when it says
hello, and the manager never sends it a second time. (The engine's own node-shared cache
semantics — locks, fetch-once across concurrent workers — come with the data plane.)
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

from kubevine import Manager, Task
from kubevine.admin import Admin
from kubevine.stats import ManagerStatus

from .emulator import KubeAPI
from .helpers import wait_for
from .vine import (
    apply,
    apply_crds,
    manager_address,
    pool_spec,
    running_operator,
    token,
    vw,
    worker_pods,
    workflow,
)

PAYLOAD = b"events from one NanoAOD file\n" * 100


def run_all(m: Manager, tasks: list[Task], timeout: float = 60) -> None:
    for task in tasks:
        m.submit(task)
    deadline = time.monotonic() + timeout
    while not m.empty():
        assert time.monotonic() < deadline, "tasks did not finish"
        m.wait(1)
    assert all(t.successful() for t in tasks), [t.error for t in tasks if not t.successful()][:3]


def test_two_worker_pods_on_one_node_share_its_cache_and_the_file_arrives_once(
    kube_api: KubeAPI, kubelet_factory: Any, tmp_path: pathlib.Path
) -> None:
    kubelet = kubelet_factory(nodes=["node-a"])  # every worker pod lands on node-a
    apply_crds(kube_api)
    with running_operator(kube_api, tmp_path / "operator.log") as operator:
        spec = pool_spec(min=1, max=1, idleTimeoutSeconds=600)
        apply(kube_api, workflow("cache", spec))
        address = manager_address(kube_api, "cache")
        admin = Admin(address, token(kube_api, "cache"), encrypt=True)

        def connected(n: int) -> ManagerStatus | None:
            status = admin.status()
            return status if len(status.workers) == n else None

        with Manager(address, token=token(kube_api, "cache"), encrypt=True) as m:
            data = m.declare_buffer(PAYLOAD)
            first = Task("wc -c < data.txt", cores=1)
            first.add_input(data, "data.txt")
            run_all(m, [first])
            assert first.output.strip() == str(len(PAYLOAD))

            cache_dir = kubelet.node_dir("node-a") / "var/lib/kubevine/cache" / "default"  # its namespace's
            cached = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
            assert [p.read_bytes() for p in cached] == [PAYLOAD]  # on the node, once

            # a second worker pod on the same node
            apply(kube_api, workflow("cache", pool_spec(min=2, max=2, idleTimeoutSeconds=600)))
            status = wait_for(lambda: connected(2), timeout=30, interval=0.2, what=operator.log_tail())
            assert status is not None
            pods = worker_pods(kube_api, "cache")
            assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} == {"node-a"}
            newcomer = next(w for w in status.workers if w.id != first.worker)
            assert newcomer.cached_files >= 1  # it found the file the other worker fetched

            more = [Task("sleep 0.2; wc -c < data.txt", cores=1) for _ in range(20)]
            for task in more:
                task.add_input(data, "data.txt")
            run_all(m, more)
        assert {t.worker for t in more} == {w.id for w in status.workers}  # both workers ran some

        def sampled() -> ManagerStatus | None:
            now = admin.status()
            return now if now.perf.completed >= 21 else None

        final = wait_for(sampled, timeout=15, interval=0.3, what="the manager's counters")
        assert final is not None
        perf = final.perf
        assert perf.transfers.get("manager", 0) == 1  # the file travelled to the node once
        assert perf.cache_misses == 1 and perf.cache_hits == 20
        wait_for(
            lambda: vw(kube_api, "cache")["status"]["workers"]["connected"] == 2, what="status: 2 workers"
        )
