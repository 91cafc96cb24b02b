"""Two operator replicas with kopf peering, as the chart runs them with replicaCount: 2: one
works and the other waits; the children and worker pods are created once; when the
working replica exits the other takes over, and deletion still completes."""

from __future__ import annotations

import pathlib
from typing import Any

from .emulator import KubeAPI
from .helpers import kubectl, kubectl_json, wait_for
from .kubelet import Kubelet
from .vine import (
    OperatorProcess,
    apply,
    apply_crds,
    most_pods_at_once,
    pool_spec,
    worker_pod_history,
    worker_pods,
    workflow,
)

PEERING = {
    "apiVersion": "kopf.dev/v1",
    "kind": "KopfPeering",
    "metadata": {"name": "kubevine", "namespace": "default"},
}


def test_two_replicas_with_peering_act_once_and_the_second_takes_over(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    apply_crds(kube_api)
    apply(kube_api, PEERING)
    replicas = [
        OperatorProcess(kube_api, tmp_path / f"operator-{i}.log", "--namespace", "default").start()
        for i in range(2)
    ]
    try:
        for replica in replicas:
            wait_for(replica.healthy, timeout=20, what=f"a replica to be live:\n{replica.log_tail()}")
        peers = wait_for(
            lambda: len(kubectl_json(kube_api, "get", "kopfpeering", "kubevine").get("status") or {}) == 2,
            what="both replicas in the peering object",
        )
        assert peers

        apply(kube_api, workflow("ha", pool_spec(min=2, max=2)))  # min 2: pods at once, stats or not
        wait_for(lambda: len(worker_pods(kube_api, "ha")) == 2, timeout=20, what="the pool's 2 pods")

        def creator() -> list[OperatorProcess]:
            return [r for r in replicas if "Created: Secret/ha-token" in r.log_tail(100_000)]

        active = wait_for(creator, what="the replica that created the children")
        assert len(active) == 1  # the other one stood by
        standby = next(r for r in replicas if r is not active[0])
        active[0].stop()  # a clean exit withdraws it from the peering at once

        apply(kube_api, workflow("ha", pool_spec(min=3, max=3)))
        wait_for(
            lambda: len(worker_pods(kube_api, "ha")) == 3,
            timeout=20,
            what=f"the standby replica to take over:\n{standby.log_tail()}",
        )
        history = worker_pod_history(kube_api, "ha")
        phases = [(kind, name, (pod.get("status") or {}).get("phase")) for kind, name, pod in history]
        story = " ".join(f"{kind[0]}:{name[-5:]}:{phase}" for kind, name, phase in phases
                         if kind != "MODIFIED" or phase not in (None, "Pending"))  # fmt: skip
        assert most_pods_at_once(history) == 3 and len({name for _, name, _ in history}) == 3, story

        kubectl(kube_api, "delete", "vw", "ha", "--timeout=30s")  # the standby releases the finalizer
        gone: Any = kubectl(kube_api, "get", "vw", "ha", check=False)
        assert gone.returncode != 0
    finally:
        for replica in replicas:
            replica.stop()
