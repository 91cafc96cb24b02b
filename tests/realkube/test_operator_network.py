"""The manager and the managed Redis listen on every address of their pods, so that
`kubectl port-forward` — which connects to 127.0.0.1 inside the pod's network namespace —
reaches them; the manager advertises its pod IP. The process kubelet serves no port-forward,
so the test goes where a port-forward's connection goes: into the pod's network namespace.
Their PodDisruptionBudgets keep a node drain from evicting them mid-run."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import textwrap
import urllib.error
from typing import Any

from kubevine.admin import Admin

from .controlplane import Cluster
from .helpers import Kube, pid_of
from .vine import Release, Workflows, pool_spec, workflow

ADMIN = textwrap.dedent("""
    import json, os, sys
    from kubevine.admin import Admin
    status = Admin(sys.argv[1], os.environ["KUBEVINE_TOKEN"], timeout=10, encrypt=True).status()
    print(json.dumps({"workflow": status.workflow, "workers": len(status.workers)}))
""")


def in_pod(cluster: Cluster, pod: dict[str, Any], *argv: str, env: dict[str, str] | None = None) -> str:
    """Run a command in the pod's network namespace (where a port-forward connects)."""
    node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    netns = f"/run/netns/{cluster.net.namespace(node)}-p{ip.rsplit('.', 1)[1]}"
    result = subprocess.run(
        ["nsenter", f"--net={netns}", "--", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={**cluster.env, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, f"{argv} in {netns}: {result.stdout}{result.stderr}"
    return result.stdout


def environ(pid: int) -> dict[str, str]:
    raw = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_manager_and_redis_answer_on_127_0_0_1_as_a_port_forward_needs_and_a_drain_cannot_evict_them(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    wf.apply(workflow("fwd", pool_spec()))
    wf.wait_phase("fwd", "Running")
    manager = wf.manager_pod("fwd")
    token = wf.token("fwd")

    through_forward = json.loads(in_pod(real_cluster, manager, sys.executable, "-c", ADMIN, "127.0.0.1:9123",
                                        env={"KUBEVINE_TOKEN": token}))  # fmt: skip
    assert through_forward == {"workflow": "fwd", "workers": 0}
    # ... and workers and the operator reach the same socket at the pod IP.
    assert (
        Admin(f"{manager['status']['podIP']}:9123", token, timeout=10, encrypt=True).status().workflow
        == "fwd"
    )
    probe = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/healthz').status)"
    health = in_pod(real_cluster, manager, sys.executable, "-c", probe)
    assert health.strip() == "200"
    pid = pid_of(manager["status"]["containerStatuses"][0])
    assert pid is not None
    assert environ(pid)["KUBEVINE_ADVERTISE_HOST"] == manager["status"]["podIP"]  # what it tells others

    redis = kube.pod("fwd-redis-0")
    assert redis is not None
    password = kube.get(f"/api/v1/namespaces/{kube.ns}/secrets/fwd-token")["data"]["redis-password"]
    auth = [
        "redis-cli",
        "-h",
        "127.0.0.1",
        "-p",
        "6379",
        "--no-auth-warning",
        "-a",
        base64.b64decode(password).decode(),
    ]
    assert in_pod(real_cluster, redis, *auth, "ping").strip() == "PONG"
    # stateStore.memory 256Mi: maxmemory 80% of it, and a full store refuses writes.
    assert in_pod(real_cluster, redis, *auth, "config", "get", "maxmemory").split() == [
        "maxmemory",
        str(256 * 1024 * 1024 * 8 // 10),
    ]
    assert in_pod(real_cluster, redis, *auth, "config", "get", "maxmemory-policy").split() == [
        "maxmemory-policy",
        "noeviction",
    ]
    limits = redis["spec"]["containers"][0]["resources"]
    assert limits["limits"]["memory"] == limits["requests"]["memory"] == "256Mi"

    # A node drain cannot evict the running manager: its PodDisruptionBudget refuses (429), and
    # the Redis has one too.
    name = manager["metadata"]["name"]
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": kube.ns},
    }
    try:
        kube.admin.request("POST", f"/api/v1/namespaces/{kube.ns}/pods/{name}/eviction", eviction)
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == 429 and "disruption budget" in body, (e.code, body)
    else:
        raise AssertionError("the manager was evicted despite its PodDisruptionBudget")
    budgets = kube.get(f"/apis/policy/v1/namespaces/{kube.ns}/poddisruptionbudgets")["items"]
    assert {b["metadata"]["name"]: b["status"]["disruptionsAllowed"] for b in budgets} == {
        "fwd-manager": 0,
        "fwd-redis": 0,
    }
