"""A worker pool on the real control plane: installed with helm, scaled 0 → 3 → 0 across three
nodes by the operator running as its ServiceAccount — its /metrics showing desired workers jump
to 3 and actual ones catch up, status, conditions, printer columns and Events telling the story —
the node cache shared per node, and the whole workflow garbage-collected by the real
controller-manager when it is deleted."""

from __future__ import annotations

import os
import pathlib
import re
import time

from kubevine import Task

from .controlplane import Cluster
from .helpers import Kube, pid_of, wait_for
from .vine import Release, Workflows, cached_files, node_cache_dir, pool_spec, spread, workflow

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

    series = (("namespace", kube.ns), ("workflow", "pool"))
    with wf.client("pool") as m:
        data = m.declare_buffer(PAYLOAD, cache="forever")  # outlives the workflow, on each node

        def submit(n: int) -> None:
            for _ in range(n):
                task = Task("sleep 0.5; wc -c < data.bin", cores=1)
                task.add_input(data, "data.bin")
                m.submit(task)
                tasks.append(task)

        tasks: list[Task] = []
        submit(24)
        returned = 0
        seen: list[tuple[float | None, float | None]] = []

        def converged() -> bool:
            nonlocal returned
            samples = kubevine.metrics()
            seen.append((samples.get(("kubevine_operator_workers_desired", series)),
                         samples.get(("kubevine_operator_workers_actual", series))))  # fmt: skip
            # As a user with a stream of work would: while the third worker is on its way, the
            # queue never runs dry (two fast workers could otherwise finish the 24 tasks first
            # and the autoscaler would rightly want fewer).
            while m.wait(0) is not None:
                returned += 1
            if seen[-1][1] != 3 and len(tasks) - returned < 12:
                submit(6)
            return seen[-1] == (3, 3)

        try:
            wait_for(converged, timeout=90, interval=0.2, what="desired = actual = 3 in /metrics")
        except AssertionError as e:
            pods = [(p["metadata"]["name"], p["spec"].get("nodeName"), p["status"].get("phase"),
                     [c.get("state") for c in p["status"].get("containerStatuses") or []])
                    for p in wf.workers("pool", live=False)]  # fmt: skip
            log = kubevine.operator_log()[-3000:]
            raise AssertionError(f"{e}\n(desired, actual) seen: {seen[-20:]}\nworker pods: {pods}\n"
                                 f"status: {wf.status('pool')}\n{log}") from e  # fmt: skip
        assert any(d == 3 and a is not None and a < 3 for d, a in seen), seen  # desired led, actual followed
        deadline = time.monotonic() + 120
        while not m.empty():
            assert time.monotonic() < deadline, "tasks did not finish in 120 s"
            m.wait(1)
        assert all(t.successful() for t in tasks), [(t.id, t.result) for t in tasks if not t.successful()][:3]
        assert {t.output.strip() for t in tasks} == {str(len(PAYLOAD))}
        assert {t.attempts for t in tasks} == {1}  # nothing retried, nothing killed and requeued
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
    body = wf.get("pool")
    assert body is not None
    status = body["status"]
    assert status["tasks"] == {"waiting": 0, "running": 0, "done": len(tasks), "failed": 0}
    assert status["workers"] == {"desired": 0, "pending": 0, "connected": 0, "draining": 0}
    assert status["lastScaling"]["to"] == 0 and "idle" in status["lastScaling"]["reason"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    conditions = wf.conditions("pool")
    said = {k: (c["status"], c.get("reason"), c.get("message")) for k, c in conditions.items()}
    for kind in ("Valid", "ManagerReady", "WorkersReady", "Healthy"):
        assert conditions[kind]["status"] == "True", (kind, said, status.get("problems"))
    scaled_up = [e for e in wf.events("pool") if e["reason"] == "ScaledUp"]
    # It says what it saw: the manager's counts when it looked (the client may still have been
    # submitting the first 24), enough for 3 one-core workers.
    said = re.search(r"(\d+) waiting", scaled_up[0]["message"])
    assert "0→3" in scaled_up[0]["message"] and said and 3 <= int(said.group(1)) <= 24, scaled_up[0]
    drained = kubevine.metrics()
    assert drained[("kubevine_operator_workers_desired", series)] == 0
    assert drained[("kubevine_operator_workers_actual", series)] == 0
    assert drained[("kubevine_operator_worker_pods_created_total", series)] == 3
    table = kube.kubectl("get", "vw", "pool").stdout  # the printer columns
    assert "Running" in table and str(len(tasks)) in table, table
    described = kube.kubectl("describe", "vw", "pool").stdout
    assert "ScaledDown" in described and "Last Scaling" in described, described

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
    wait_for(lambda: not [k for k in kubevine.metrics() if set(series) <= set(k[1])], timeout=10,
             interval=0.2, what="the deleted workflow's series to leave /metrics")  # fmt: skip
    # The node caches stay ("forever" files): the next workflow of the namespace finds them warm.
    assert all(cached_files(node_cache_dir(real_cluster, node, kube.ns)) for node in nodes)
