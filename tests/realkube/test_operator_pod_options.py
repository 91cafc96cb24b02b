"""What a HEP site sets on a workflow's pods — placement, a priority class, a ServiceAccount,
registries, extra volumes (a grid proxy, a site configuration), labels, annotations and
environment — reaches the pods the real API server admits, the real scheduler places and the
kubelet runs: a task reads the mounted file and the environment, and the application calls the
API as its ServiceAccount."""

from __future__ import annotations

import textwrap

from .helpers import Kube, wait_for
from .vine import Release, Workflows, pool_spec, workflow

PRIORITY = "kubevine-test-analysis"
WHOAMI = textwrap.dedent("""
    import json, os, ssl, urllib.request
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    req = urllib.request.Request(
        f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
        method="POST", headers={"Authorization": "Bearer " + open(f"{sa}/token").read(),
                                "Content-Type": "application/json"})
    review = json.load(urllib.request.urlopen(req, context=ssl.create_default_context(cafile=f"{sa}/ca.crt")))
    print("application runs as", review["status"]["userInfo"]["username"])
    print("site is", os.environ["SITE_NAME"])

    from kubevine import Manager, Task
    with Manager(os.environ["KUBEVINE_MANAGER"]) as m:  # what a task on a worker sees
        task = Task("cat /var/run/secrets/site/storage.json; echo; cat /var/run/secrets/grid/proxy; echo;"
                    " echo $SITE_NAME", cores=1)
        m.submit(task)
        while not m.empty():
            m.wait(5)
    print("task saw", " ".join(task.output.split()))
""")


def test_site_options_reach_the_pods_of_the_manager_the_workers_and_the_application(
    kubevine: Release, kube: Kube
) -> None:
    wf = Workflows(kube)
    wf.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": PRIORITY},
            "value": 1000,
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "grid"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "site"},
            "data": {"SITE_NAME": "T2_XX_Test", "storage.json": '{"door": "root://eos"}'},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "x509"},
            "stringData": {"proxy": "-----PROXY-----"},
        },
    )
    site = {
        "priorityClassName": PRIORITY,
        "imagePullSecrets": [{"name": "regcred"}],
        "podLabels": {"site": "t2-test"},
        "podAnnotations": {"site.example/owner": "cms"},
        "envFrom": [{"configMapRef": {"name": "site"}}],
        "volumes": [
            {"name": "site", "configMap": {"name": "site"}},
            {"name": "proxy", "secret": {"secretName": "x509", "defaultMode": 0o440}},
        ],
        "volumeMounts": [
            # (the process kubelet bind-mounts only paths under /var/run/secrets for real)
            {"name": "site", "mountPath": "/var/run/secrets/site", "readOnly": True},
            {"name": "proxy", "mountPath": "/var/run/secrets/grid", "readOnly": True},
        ],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "hep", "effect": "NoSchedule"}],
    }
    spec = pool_spec(
        min=1, max=1, idleTimeoutSeconds=600, **site, nodeSelector={"kubernetes.io/hostname": "node-c"}
    )
    spec["manager"].update({**site, "nodeSelector": {"kubernetes.io/hostname": "node-b"}})
    spec["application"] = {
        "command": ["python", "-c"],
        "args": [WHOAMI],
        "serviceAccountName": "grid",
        "automountServiceAccountToken": True,
        **{k: v for k, v in site.items() if k not in ("volumes", "volumeMounts")},
    }
    try:
        wf.apply(workflow("site", spec))
        wait_for(
            lambda: wf.status("site").get("workers", {}).get("connected") == 1, timeout=90, what="the worker"
        )
        (worker,) = wf.workers("site")
        manager = wf.manager_pod("site")
        for pod, node in ((worker, "node-c"), (manager, "node-b")):
            assert pod["spec"]["nodeName"] == node  # the real scheduler honoured nodeSelector
            assert (
                pod["spec"]["priorityClassName"] == PRIORITY and pod["spec"]["priority"] == 1000
            )  # admission resolved it
            assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
            assert pod["metadata"]["labels"]["site"] == "t2-test"
            assert pod["metadata"]["annotations"]["site.example/owner"] == "cms"
            assert {"key": "dedicated", "operator": "Equal", "value": "hep", "effect": "NoSchedule"} in pod[
                "spec"
            ]["tolerations"]
            assert pod["spec"]["automountServiceAccountToken"] is False

        wf.wait_phase("site", "Succeeded", timeout=120)
        log = kube.kubectl("logs", "job/site-app").stdout
        assert f"application runs as system:serviceaccount:{kube.ns}:grid" in log
        assert "site is T2_XX_Test" in log
        assert 'task saw {"door": "root://eos"} -----PROXY----- T2_XX_Test' in log, log
    finally:
        kube.kubectl("delete", "priorityclass", PRIORITY, "--wait=false", check=False)


def test_a_workflow_may_not_run_its_pods_as_the_operators_service_account(
    kubevine: Release, kube: Kube
) -> None:
    wf = Workflows(kube)
    wf.apply(workflow("borrow", pool_spec(serviceAccountName=kubevine.fullname)))
    wf.wait_phase("borrow", "Invalid", timeout=30)
    assert "the operator's own ServiceAccount" in wf.status("borrow")["message"]
    wait_for(lambda: "InvalidSpec" in wf.reasons("borrow"), timeout=15, what="an InvalidSpec event")
    assert not kube.pods("kubevine.io/workflow=borrow")
