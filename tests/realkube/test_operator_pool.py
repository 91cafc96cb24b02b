"""A worker pool on the real control plane: installed with helm, scaled 0 → 3 → 0 across three
nodes by the operator running as its ServiceAccount, the node cache shared per node, and the
whole workflow garbage-collected by the real controller-manager when it is deleted."""

from __future__ import annotations

import os
import pathlib

from kubevine import Task

from .controlplane import Cluster
from .helpers import Kube, pid_of, wait_for
from .vine import Release, Workflows, cached_files, node_cache_dir, pool_spec, run_all, spread, workflow

PAYLOAD = os.urandom(256 * 1024)


def uid_of(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_a_pool_scales_0_to_one_worker_per_node_shares_each_nodes_cache_and_back_to_0(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    wf.apply(workflow("pool", pool_spec(max=3, affinity=spread())))
    wf.wait_phase("pool", "Running")
    assert wf.workers("pool") == []  # min 0: nothing runs until something is asked

    with wf.client("pool") as m:
        data = m.declare_buffer(PAYLOAD, cache="forever")  # outlives the workflow, on each node
        tasks = []
        for _ in range(24):
            task = Task("sleep 0.5; wc -c < data.bin", cores=1)
            task.add_input(data, "data.bin")
            tasks.append(task)
        run_all(m, tasks)
        assert {t.output.strip() for t in tasks} == {str(len(PAYLOAD))}
        ran_on = {t.worker for t in tasks}

    pods = {p["metadata"]["name"]: p for p in wf.workers("pool", live=False)}
    assert ran_on <= set(pods) and len(ran_on) == 3, (ran_on, list(pods))
    nodes = {pods[name]["spec"]["nodeName"] for name in ran_on}
    assert nodes == {"node-a", "node-b", "node-c"}  # the real scheduler honoured the pool's anti-affinity

    for name in ran_on:
        container = pods[name]["status"]["containerStatuses"][0]
        pid = pid_of(container)
        if pid is not None and pathlib.Path(f"/proc/{pid}").exists():
            assert uid_of(pid) == 10001  # no worker runs as root
    for node in nodes:
        folder = node_cache_dir(real_cluster, node, kube.ns)
        stat = folder.stat()
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (10001, 10001, 0o750)  # the keeper made it
        assert [p.read_bytes() for p in cached_files(folder)] == [PAYLOAD]  # each node got the file once

    # Idle past 3 s: the workers are drained and leave; the pool is back at 0.
    wait_for(lambda: wf.workers("pool") == [], timeout=60, interval=0.5, what="the pool to scale back to 0")
    wait_for(lambda: "ScaledDown" in wf.reasons("pool"), timeout=20, what="a ScaledDown event")
    assert "ScaledUp" in wf.reasons("pool")
    status = wf.status("pool")
    assert status["workers"]["connected"] == 0 and status["tasks"]["done"] == 24
    assert wf.conditions("pool")["Healthy"]["status"] == "True"

    # Deleted: the real garbage collector removes everything the workflow owned.
    kube.kubectl("delete", "vineworkflow", "pool", "--wait=false")
    owned = "kubevine.io/workflow=pool"

    def leftovers() -> list[str]:
        found = []
        for path in (
            f"/api/v1/namespaces/{kube.ns}/pods",
            f"/api/v1/namespaces/{kube.ns}/services",
            f"/api/v1/namespaces/{kube.ns}/secrets",
            f"/apis/apps/v1/namespaces/{kube.ns}/deployments",
            f"/apis/apps/v1/namespaces/{kube.ns}/statefulsets",
            f"/apis/policy/v1/namespaces/{kube.ns}/poddisruptionbudgets",
        ):
            found += [
                f"{path.rsplit('/', 1)[1]}/{o['metadata']['name']}"
                for o in kube.get(f"{path}?labelSelector={owned}")["items"]
            ]
        found += [
            f"pvc/{c['metadata']['name']}"
            for c in kube.get(f"/api/v1/namespaces/{kube.ns}/persistentvolumeclaims")["items"]
        ]
        return found

    wait_for(
        lambda: leftovers() == [], timeout=90, interval=0.5, what="the workflow's children to be collected"
    )
    assert wf.get("pool") is None
    # The node caches stay ("forever" files): the next workflow of the namespace finds them warm.
    assert all(cached_files(node_cache_dir(real_cluster, node, kube.ns)) for node in nodes)
