"""The chart as a platform team installs it — namespaced, by default — on the real control
plane: `helm install`, `helm test`, a workflow taken through everything the operator does, and
the operator's RBAC checked against the API server's audit log of what it called, running as
its ServiceAccount: every request allowed (none 403), and no verb granted that it never uses.
"""

from __future__ import annotations

import time
from typing import Any

from .controlplane import Cluster
from .helpers import Kube, wait_for
from .vine import Release, Workflows, operator_requests, pool_spec, workflow

SCRIPT = """
import os
from kubevine import Manager, Task
with Manager(os.environ["KUBEVINE_MANAGER"]) as m:
    tasks = [Task("sleep 1", cores=1) for _ in range(4)]
    for t in tasks:
        m.submit(t)
    while not m.empty():
        m.wait(5)
print("done")
"""
#: Granted and never called, because the API server checks it on another request: children
#: carry blockOwnerDeletion owner references, which OwnerReferencesPermissionEnforcement (on in
#: this cluster, as in OpenShift) allows only to whoever may update the owner's finalizers.
CHECKED_NOT_CALLED = {("kubevine.io/vineworkflows/finalizers", "update")}


def granted(role: dict[str, Any]) -> set[tuple[str, str]]:
    rules = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    rules.add(("/".join(x for x in (group, resource) if x), verb))
    return rules


def test_a_namespaced_install_passes_helm_test_and_uses_exactly_its_rbac_as_its_service_account(
    kubevine: Release, kube_factory: Any, real_cluster: Cluster
) -> None:
    kubevine.scale(0)  # one operator at a time: the session's release watches every namespace
    home: Kube = kube_factory(psa="privileged")
    release = Release(real_cluster, home.ns, name="solo", values={"networkPolicy": {"enabled": True}})
    started = time.time()
    try:
        release.install()
        operator = release.wait_ready()
        assert operator["spec"]["serviceAccountName"] == "solo-kubevine"
        tested = release.helm("test", "solo", "--namespace", home.ns, timeout=120)
        assert "Phase:          Succeeded" in tested.stdout or "Succeeded" in tested.stdout, tested.stdout
        assert "the operator answers at" in home.kubectl("logs", "solo-kubevine-test").stdout

        wf = Workflows(home)
        spec = pool_spec(min=1, max=2)
        spec["application"] = {"command": ["python", "-c"], "args": [SCRIPT]}
        spec["ttlSecondsAfterFinished"] = 3
        wf.apply(workflow("rbac", spec))
        wf.wait_phase("rbac", "Running")
        policies = home.get(f"/apis/networking.k8s.io/v1/namespaces/{home.ns}/networkpolicies")["items"]
        assert sorted(p["metadata"]["name"] for p in policies) == [
            "rbac-manager",
            "rbac-redis",
            "rbac-worker",
        ]
        # As after an operator upgrade whose manifests differ: every child is patched once.
        children = [
            ("deployment", "rbac-manager"),
            ("service", "rbac-manager"),
            ("statefulset", "rbac-redis"),
            ("poddisruptionbudget", "rbac-manager"),
            ("networkpolicy", "rbac-manager"),
        ]
        for kind, name in children:
            home.kubectl("annotate", kind, name, "kubevine.io/applied=an-older-operator", "--overwrite")

        def repatched() -> bool:
            values = [
                home.kubectl(
                    "get", kind, name, "-o", "jsonpath={.metadata.annotations.kubevine\\.io/applied}"
                ).stdout
                for kind, name in children
            ]
            return "an-older-operator" not in values

        wait_for(repatched, timeout=30, what="every child patched back")
        home.kubectl("delete", "secret", "rbac-token")  # read (resync) and recreated
        wait_for(
            lambda: home.get(f"/api/v1/namespaces/{home.ns}/secrets/rbac-token"),
            timeout=30,
            what="the Secret",
        )
        wait_for(
            lambda: wf.get("rbac") is None,
            timeout=150,
            interval=0.5,
            what="the workflow to finish and expire",
        )
        ended = time.time()
        role = home.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{home.ns}/roles/solo-kubevine")
    finally:
        release.uninstall()
        kubevine.scale(1)

    calls = operator_requests(real_cluster, release.user, started, ended)
    assert calls, "no request of the operator's ServiceAccount in the audit log"
    forbidden = [c for c in calls if c["code"] == 403]
    assert not forbidden, forbidden[:5]
    used = {(c["what"], c["verb"]) for c in calls if c["resource"]}
    rules = granted(role)
    assert used <= rules, sorted(used - rules)
    assert rules - used == CHECKED_NOT_CALLED, sorted(rules - used)
    # Nothing else than the operator's own namespace was touched, and no Secret was listed.
    assert {c["namespace"] for c in calls} <= {home.ns, None}
    assert not [c for c in calls if c["resource"] == "secrets" and c["verb"] in ("list", "watch")]
