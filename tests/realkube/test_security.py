"""Service-account tokens, RBAC and Pod Security Admission, enforced by the real API server."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from .helpers import Kube, wait_for
from .manifests import container, pod

# Runs in a pod: the in-cluster way (token, CA and namespace from the projected volume at its
# well-known path, the API server from KUBERNETES_SERVICE_HOST/PORT), standard library only.
API_CALLS = textwrap.dedent("""
    import json, os, ssl, urllib.error, urllib.request
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(f"{sa}/token").read()
    ns = open(f"{sa}/namespace").read()
    ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
    base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body else None
        req = urllib.request.Request(base + path, method=method, data=data)
        req.add_header("Authorization", "Bearer " + token)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as rsp:
                return rsp.status, json.loads(rsp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    status, review = call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    print("whoami", status, review["status"]["userInfo"]["username"], flush=True)
    status, pods = call("GET", f"/api/v1/namespaces/{ns}/pods")
    print("list pods", status, len(pods.get("items", [])), flush=True)
    status, _ = call("GET", f"/api/v1/namespaces/{ns}/secrets")
    print("list secrets", status, flush=True)
    status, _ = call("DELETE", f"/api/v1/namespaces/{ns}/pods/{os.environ['HOSTNAME']}")
    print("delete pod", status, flush=True)
    print("secret env", os.environ.get("FROM_SECRET"), flush=True)
""")


def test_pod_calls_the_api_as_its_service_account_within_its_rbac(kube: Kube) -> None:
    ns = kube.ns
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"},
        },
        pod(
            "caller",
            container(
                API_CALLS,
                env=[
                    {
                        "name": "FROM_SECRET",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                    }
                ],
            ),
            serviceAccountName="reader",
            restartPolicy="Never",
        ),
    )
    wait_for(lambda: kube.phase("caller") in ("Succeeded", "Failed"), timeout=60, what="caller to finish")
    log = kube.log("caller", "main")
    assert kube.phase("caller") == "Succeeded", log
    assert f"whoami 201 system:serviceaccount:{ns}:reader" in log, log
    assert "list pods 200 1" in log, log
    assert "list secrets 403" in log, log
    assert "delete pod 403" in log, log
    assert "secret env s3cret" in log, log
    # kubectl logs: the API server reads it from the node's kubelet API (TLS both ways).
    assert f"whoami 201 system:serviceaccount:{ns}:reader" in kube.kubectl("logs", "caller").stdout
    assert kube.kubectl("logs", "caller", "--tail=1").stdout == "secret env s3cret\n"
    # The API server's admission put the projected token volume in; the kubelet did the rest.
    caller = kube.pod("caller")
    assert caller is not None
    spec = caller["spec"]
    projected = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert projected and "serviceAccountToken" in projected[0]["projected"]["sources"][0]


def test_pod_security_restricted_rejects_a_privileged_pod(kube_factory: Callable[..., Kube]) -> None:
    restricted = kube_factory(psa="restricted")
    privileged = pod(
        "root",
        container("import signal; signal.pause()", securityContext={"privileged": True}),
    )
    result = restricted.apply(privileged, check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr
    assert "privileged" in result.stderr
    assert restricted.pod("root") is None

    compliant = pod(
        "ok",
        container(
            "print('fine')",
            securityContext={
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        ),
        restartPolicy="Never",
    )
    restricted.apply(compliant)
    wait_for(lambda: restricted.phase("ok") == "Succeeded", timeout=60, what="the compliant pod to run")

    # The same privileged pod is admitted where the namespace enforces nothing (the cluster default).
    open_ns = kube_factory()
    open_ns.apply(privileged)
    assert open_ns.pod("root") is not None
