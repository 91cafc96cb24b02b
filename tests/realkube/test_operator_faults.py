"""Faults on the real control plane: the operator pod replaced in the middle of a scale-up, and
a whole node (its network namespace, its kubelet and every pod on it) torn down while workers
on it run tasks — the real node lifecycle controller and taint manager doing what they do to a
node that dies."""

from __future__ import annotations

import time
from typing import Any

from kubevine import Task

from .controlplane import Cluster
from .helpers import Kube, is_ready, node_condition, wait_for
from .vine import (
    Release,
    Workflows,
    external_store,
    operator_requests,
    pool_spec,
    preferred_spread,
    redis_server,
    workflow,
)


def worker_creates(cluster: Cluster, release: Release, namespace: str, since: float) -> list[str]:
    """Names of the worker pods the operator created in `namespace` (from the audit log)."""
    return [
        r["name"] or ""
        for r in operator_requests(cluster, release.user, since)
        if r["verb"] == "create"
        and r["resource"] == "pods"
        and r["namespace"] == namespace
        and r["code"] == 201
    ]


def no_execute_taints(kube: Kube, node: str) -> list[dict[str, Any]]:
    return [t for t in kube.node(node)["spec"].get("taints") or [] if t["effect"] == "NoExecute"]


def test_the_operator_pod_replaced_mid_scale_up_finishes_the_job_without_a_pod_too_many(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    started = time.time()
    wf.apply(workflow("grow", pool_spec(max=4)))
    wf.wait_phase("grow", "Running")
    with wf.client("grow") as m:
        tasks = [Task("sleep 1", cores=1) for _ in range(16)]
        for task in tasks:
            m.submit(task)
        # The pool is growing (pods created, not yet connected) when the operator is replaced:
        # deleted like a rolling update or a node drain would, its Deployment starts another.
        wait_for(lambda: wf.workers("grow"), timeout=30, interval=0.1, what="the first worker pods")
        (old,) = kubevine.operator_pods()
        kube_ops = Kube(real_cluster, kubevine.namespace)
        kube_ops.kubectl("delete", "pod", old["metadata"]["name"], "--wait=false")
        new = wait_for(
            lambda: [p for p in kubevine.operator_pods() if p["metadata"]["uid"] != old["metadata"]["uid"]],
            timeout=30,
            what="a new operator pod",
        )
        kubevine.wait_ready(keepers=0)
        deadline = time.monotonic() + 120
        while not m.empty():
            assert time.monotonic() < deadline, "tasks did not finish after the operator was replaced"
            m.wait(1)
    assert all(t.successful() for t in tasks)
    assert {t.attempts for t in tasks} == {1}  # nothing killed and requeued by a pod too many or too few
    assert new[0]["metadata"]["name"] != old["metadata"]["name"]
    # Each worker pod was created once: the new operator counted the pods the old one made.
    created = worker_creates(real_cluster, kubevine, kube.ns, started)
    assert len(created) == len(set(created)) <= 4, created
    assert {p["metadata"]["name"] for p in wf.workers("grow", live=False)} <= set(created)
    wait_for(
        lambda: wf.workers("grow") == [], timeout=60, interval=0.5, what="the new operator to scale to 0"
    )


def test_a_node_torn_down_mid_run_loses_its_worker_and_the_tasks_finish_on_the_others(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    """The node dies as a machine does: its kubelet stops posting status, the real node
    lifecycle controller marks it Unknown and taints it unreachable, the taint manager evicts
    its pods after their toleration; the manager has declared the worker lost, its tasks run
    on the other workers and on the replacement the operator made. The node comes back; its
    new kubelet lets the evicted pod go, and the taints are lifted."""
    wf = Workflows(kube)
    # The manager, its (external) Redis and the operator stay on node-a; a worker on node-b or
    # node-c loses its node.
    wf.apply(*redis_server(node="node-a"))
    wait_for(lambda: kube.running_pods("app=redis", 1), timeout=60, what="the Redis")
    spec = pool_spec(min=3, max=3, idleTimeoutSeconds=600, affinity=preferred_spread())
    spec["stateStore"] = external_store(kube.ns)
    spec["manager"]["nodeSelector"] = {"kubernetes.io/hostname": "node-a"}
    assert kubevine.operator_pods()[0]["spec"]["nodeName"] == "node-a"
    wf.apply(workflow("survive", spec))
    wf.wait_phase("survive", "Running")
    wait_for(
        lambda: wf.status("survive").get("workers", {}).get("connected") == 3, timeout=60, what="3 workers"
    )
    pods = {p["metadata"]["name"]: p for p in wf.workers("survive")}
    victims = [p for p in pods.values() if p["spec"]["nodeName"] != "node-a"]
    assert victims, [(n, p["spec"]["nodeName"]) for n, p in pods.items()]
    victim = victims[0]
    lost_worker = victim["metadata"]["name"]
    node = victim["spec"]["nodeName"]
    index = int(real_cluster.record["nodes"][node]["index"])
    # The API server gave the pod the default tolerations of an unreachable or not-ready node.
    grace = real_cluster.settings.toleration_seconds
    tolerations = {t["key"]: t.get("tolerationSeconds") for t in victim["spec"]["tolerations"]}
    assert tolerations == {"node.kubernetes.io/not-ready": grace, "node.kubernetes.io/unreachable": grace}

    with wf.client("survive") as m:
        tasks = [Task("sleep 2", cores=1) for _ in range(15)]
        for task in tasks:
            m.submit(task)
        wait_for(lambda: wf.status("survive").get("tasks", {}).get("running", 0) >= 3, timeout=30,
                 what="tasks running on every worker")  # fmt: skip
        torn_down = time.monotonic()
        real_cluster.kill_node(node)  # every process of the node, its worker's among them, dies at once
        try:
            wait_for(
                lambda: node_condition(kube.node(node)) == "Unknown",
                timeout=real_cluster.settings.node_monitor_grace + 30,
                what=f"{node} to stop posting status",
            )
            unreachable = wait_for(
                lambda: [
                    t for t in kube.node(node)["spec"].get("taints") or [] if t["effect"] == "NoExecute"
                ],
                timeout=30,
                what="the unreachable NoExecute taint",
            )
            assert unreachable[0]["key"] == "node.kubernetes.io/unreachable"

            def replacement() -> list[dict[str, Any]]:
                return [
                    p
                    for p in wf.workers("survive")
                    if p["metadata"]["name"] not in pods and p["spec"].get("nodeName")
                ]

            [new] = wait_for(
                replacement, timeout=60, interval=0.5, what="a replacement worker on another node"
            )
            assert new["spec"]["nodeName"] != node
            print(
                f"replacement worker bound {time.monotonic() - torn_down:.1f} s after the node was torn down"
            )
            deadline = time.monotonic() + 120
            while not m.empty():
                assert time.monotonic() < deadline, "the tasks of the lost worker were not run elsewhere"
                m.wait(1)

            # Evicted by the taint manager (it waits for the pod's processes to be confirmed
            # gone, which only its node's kubelet can do): so before the node comes back.
            def evicted() -> dict[str, Any] | None:
                pod = kube.pod(lost_worker)
                return pod if pod is not None and pod["metadata"].get("deletionTimestamp") else None

            pod = wait_for(evicted, timeout=30, interval=0.3, what="the lost worker's pod to be evicted")
            conditions = {c["type"]: c for c in pod["status"].get("conditions") or []}
            assert conditions["DisruptionTarget"]["reason"] == "DeletionByTaintManager", conditions
        finally:
            real_cluster.start_node(index)  # back, Ready: later tests have their three nodes
    assert all(t.successful() for t in tasks), [(t.id, t.result) for t in tasks if not t.successful()]
    rerun = [t for t in tasks if t.attempts > 1]
    assert rerun, "no task was running on the lost worker"  # its tasks ran again, elsewhere
    assert all(t.worker != lost_worker for t in rerun)
    # The replacement joined the manager: the pool is whole again.
    wait_for(lambda: wf.status("survive").get("workers", {}).get("connected") == 3, timeout=60,
             what="the replacement worker to connect")  # fmt: skip
    # The returning kubelet finds the evicted pod bound to it, with no process, and lets it go.
    wait_for(lambda: kube.pod(lost_worker) is None, timeout=30, interval=0.3,
             what="the evicted pod to be removed by its node's new kubelet")  # fmt: skip
    wait_for(lambda: not no_execute_taints(kube, node), timeout=30, what="the node's taints to be lifted")
    # What ran there before runs again: the node-cache keeper (a DaemonSet pod) is Ready on it.
    wait_for(lambda: [p for p in kubevine.keeper_pods() if p["spec"]["nodeName"] == node and is_ready(p)],
             timeout=30, what=f"the keeper on {node} to run again")  # fmt: skip
    assert len(wf.workers("survive")) == 3  # min 3, and no more: the lost pod did not hold its place
