"""Reconcile is level-triggered: what someone deletes behind the operator's back — the manager
Deployment, its Service, the token Secret, a PodDisruptionBudget — is back within a step, and
the workflow keeps working with the token its workers and clients hold. A change the managed
Redis's volume could not survive is refused by the API server (CEL `oldSelf`), so the operator
never meets an endless 422; a change it can survive is applied."""

from __future__ import annotations

from kubevine import Task

from .helpers import Kube, wait_for
from .vine import Release, Workflows, pool_spec, run_all, workflow


def uid(kube: Kube, path: str) -> str | None:
    obj = kube.get(path)
    return None if obj is None or obj["metadata"].get("deletionTimestamp") else str(obj["metadata"]["uid"])


def test_deleted_children_come_back_the_token_stays_and_only_what_redis_can_survive_changes(
    kubevine: Release, kube: Kube
) -> None:
    wf = Workflows(kube)
    # min 0: no worker holds the old manager's address when it goes. (Here a Service name is
    # resolved once, when a container starts — there are no ClusterIPs — so a worker started
    # before the manager was replaced would keep knocking at the old pod IP; in a cluster it
    # reconnects through the Service.)
    wf.apply(workflow("drift", pool_spec()))
    wf.wait_phase("drift", "Running")
    token = wf.token("drift")
    ns = kube.ns
    paths = {
        "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/drift-manager",
        "service": f"/api/v1/namespaces/{ns}/services/drift-manager",
        "secret": f"/api/v1/namespaces/{ns}/secrets/drift-token",
        "poddisruptionbudget": f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/drift-manager",
    }
    before = {kind: uid(kube, path) for kind, path in paths.items()}
    assert all(before.values()), before
    for kind in paths:
        kube.kubectl("delete", kind, "drift-manager" if kind != "secret" else "drift-token", "--wait=false")

    def back() -> bool:
        now = {kind: uid(kube, path) for kind, path in paths.items()}
        return all(now[k] and now[k] != before[k] for k in paths)

    wait_for(back, timeout=30, interval=0.3, what="every deleted child to be recreated")
    assert wf.token("drift") == token  # the Secret came back with the token the workers hold
    recreated = " ".join(e["message"] for e in wf.events("drift") if e["reason"] == "Recreated")
    for name in ("Deployment/drift-manager", "Service/drift-manager", "Secret/drift-token",
                 "PodDisruptionBudget/drift-manager"):  # fmt: skip
        assert name in recreated, recreated
    wf.wait_phase("drift", "Running")
    with wf.client("drift") as m:  # the old token still works, against the new manager pod
        run_all(m, [Task("echo still here", cores=1)])

    # What the managed Redis was made with cannot change; the rest can.
    refused = kube.kubectl(
        "patch",
        "vineworkflow",
        "drift",
        "--type=merge",
        "-p",
        '{"spec":{"stateStore":{"storageSize":"5Gi"}}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "stateStore.storageSize cannot change" in refused.stderr, refused.stderr
    # The store's memory can change: the StatefulSet's template is patched (never its
    # volumeClaimTemplates), and the API server takes it.
    kube.kubectl(
        "patch", "vineworkflow", "drift", "--type=merge", "-p", '{"spec":{"stateStore":{"memory":"384Mi"}}}'
    )

    def redis_memory() -> str:
        sts = kube.get(f"/apis/apps/v1/namespaces/{kube.ns}/statefulsets/drift-redis")
        return str(sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])

    wait_for(lambda: redis_memory() == "384Mi", timeout=30, what="the Redis StatefulSet to be patched")
    # The Event is posted once the step that patched it ends: it may follow the patch by a moment.
    wait_for(lambda: "Updated" in wf.reasons("drift"), timeout=15, what="an Updated event")
    assert "ReconcileFailed" not in wf.reasons("drift")
    assert not wf.status("drift").get("problems")
