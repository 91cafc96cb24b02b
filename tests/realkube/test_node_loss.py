"""A node whose namespace is torn down goes NotReady; the real controllers replace its pods elsewhere."""

from __future__ import annotations

import time
from typing import Any

from .controlplane import Cluster
from .helpers import Kube, node_condition, wait_for
from .manifests import echo_deployment


def test_a_torn_down_node_goes_unknown_and_its_pod_is_replaced_on_another_node(
    kube: Kube, real_cluster: Cluster
) -> None:
    kube.apply(echo_deployment("survivor"))
    [old] = wait_for(lambda: kube.running_pods("app=survivor", 1), timeout=60, what="survivor Ready")
    node, old_name = old["spec"]["nodeName"], old["metadata"]["name"]
    tolerations = {t["key"]: t.get("tolerationSeconds") for t in old["spec"]["tolerations"]}
    grace = real_cluster.settings.toleration_seconds
    assert tolerations == {"node.kubernetes.io/not-ready": grace, "node.kubernetes.io/unreachable": grace}
    index = int(real_cluster.record["nodes"][node]["index"])

    torn_down = time.monotonic()
    real_cluster.kill_node(node)  # every process of the node, the kubelet and the pod's, dies at once
    try:
        wait_for(
            lambda: node_condition(kube.node(node)) == "Unknown",
            timeout=real_cluster.settings.node_monitor_grace + 20,
            what=f"{node} to stop posting status",
        )
        unreachable = wait_for(
            lambda: [t for t in kube.node(node)["spec"].get("taints") or [] if t["effect"] == "NoExecute"],
            timeout=20,
            what="the unreachable NoExecute taint",
        )
        assert unreachable[0]["key"] == "node.kubernetes.io/unreachable"

        def replacement() -> list[dict[str, Any]]:
            return [p for p in kube.running_pods("app=survivor", 1) if p["metadata"]["name"] != old_name]

        [new] = wait_for(replacement, timeout=60, what="a replacement pod Ready elsewhere")
        assert new["spec"]["nodeName"] != node
        replaced_after = time.monotonic() - torn_down
        evicted = kube.pod(old_name)
        assert evicted is not None and evicted["metadata"].get(
            "deletionTimestamp"
        )  # evicted, not yet confirmed
        conditions = {c["type"]: c for c in evicted["status"].get("conditions") or []}
        assert conditions["DisruptionTarget"]["reason"] == "DeletionByTaintManager", conditions
        print(f"replacement Ready {replaced_after:.1f} s after the node was torn down")
    finally:
        real_cluster.start_node(index)  # back, Ready: later tests have their three nodes
    # The returning kubelet finds the evicted pod bound to it, with no process, and lets it go.
    wait_for(lambda: kube.pod(old_name) is None, timeout=30, what="the evicted pod to be removed")
    wait_for(
        lambda: not [t for t in kube.node(node)["spec"].get("taints") or [] if t["effect"] == "NoExecute"],
        timeout=30,
        what="the node's taints to be lifted",
    )
