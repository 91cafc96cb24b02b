"""CRD upgrades: Helm installs the CRDs of `crds/` once and never upgrades them. An operator
started against an older VineWorkflow schema refuses to run and says how to upgrade it; after
the documented `kubectl apply --server-side -f charts/kubevine/crds/` it runs."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .controlplane import Cluster
from .helpers import Kube, is_ready, wait_for
from .vine import CRDS, Release


def older_crd() -> dict[str, Any]:
    """The chart's CRD as an earlier release shipped it: no `spec.security`, no `status.problems`."""
    crd: dict[str, Any] = yaml.safe_load((CRDS / "vineworkflows.kubevine.io.yaml").read_text())
    old = copy.deepcopy(crd)
    schema = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    del schema["spec"]["properties"]["security"]
    del schema["status"]["properties"]["problems"]
    return old


def test_the_operator_refuses_an_older_crd_clearly_and_runs_once_it_is_upgraded(
    kubevine: Release, real_cluster: Cluster
) -> None:
    ops = Kube(real_cluster, kubevine.namespace)
    kubevine.scale(0)
    try:
        ops.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(older_crd())
        )
        ops.kubectl("scale", f"deployment/{kubevine.fullname}", "--replicas=1")

        def refused() -> str:
            return "older than this operator" in kubevine.operator_log() and kubevine.operator_log()

        log = wait_for(refused, timeout=90, interval=0.5, what="the operator to refuse the old CRD")
        assert "it lacks spec.security" in log and "status.problems" in log
        assert "kubectl apply --server-side --force-conflicts -f charts/kubevine/crds/" in log

        def exited() -> dict[str, Any] | None:
            """The operator pod once its kubelet reported the container's exit (code 2) or restart."""
            (pod,) = kubevine.operator_pods()
            statuses = pod["status"].get("containerStatuses") or []
            exits = [(s.get(k) or {}).get("terminated", {}).get("exitCode") for s in statuses
                     for k in ("state", "lastState")]  # fmt: skip
            return pod if 2 in exits or (statuses and statuses[0]["restartCount"] >= 1) else None

        pod = wait_for(exited, timeout=30, interval=0.3, what="the operator's exit to be reported")
        assert not is_ready(pod)  # not Ready: `kubectl rollout status` says so too

        # The documented upgrade step; the crash-looping operator then starts.
        ops.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        kubevine.wait_ready(timeout=90, keepers=0)
    finally:
        ops.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        if not kubevine.operator_pods():
            kubevine.scale(1)
        kubevine.wait_ready(timeout=90, keepers=0)
