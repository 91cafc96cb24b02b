"""The process kubelet runs the emulator's pods as real local processes."""

from __future__ import annotations

import pathlib
import socket
import textwrap
from typing import Any

import yaml

from .emulator import KubeAPI
from .helpers import get, kubectl, wait_for
from .kubelet import Kubelet

# A tiny TCP echo server: binds $KUBEVINE_BIND_HOST:$PORT as kubevine processes do.
ECHO_SERVER = textwrap.dedent("""
    import os, socket, signal, sys
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    s = socket.create_server((os.environ["KUBEVINE_BIND_HOST"], int(os.environ.get("PORT", "8080"))))
    while True:
        conn, _ = s.accept()
        conn.sendall(os.environ.get("GREETING", "hello").encode())
        conn.close()
""")


def apply(api: KubeAPI, *docs: dict[str, Any]) -> None:
    kubectl(api, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def pods(api: KubeAPI, selector: str = "", namespace: str = "default") -> list[dict[str, Any]]:
    result = get(api, f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    return list(result["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_pods(api: KubeAPI, selector: str, count: int = 1) -> list[dict[str, Any]]:
    found = [p for p in pods(api, selector) if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
    return found if len(found) >= count else []


def read_from(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as conn:
        return conn.recv(100)


def deployment(name: str, container: dict[str, Any], replicas: int = 1, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container], **pod_spec}},
        },
    }


BIND_HOST_ENV = {"name": "KUBEVINE_BIND_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_deployment_runs_as_a_process_that_becomes_ready_on_its_pod_ip(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(kube_api, deployment("echo", {
        "name": "server",
        "image": "kubevine/test:dev",
        "command": ["python", "-c", ECHO_SERVER],
        "env": [BIND_HOST_ENV, {"name": "GREETING", "value": "hi from $(KUBEVINE_BIND_HOST)"}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }))
    [pod] = wait_for(lambda: ready_pods(kube_api, "app=echo"), timeout=20, what="a Ready echo pod")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    assert pod["spec"]["nodeName"] in ("node-a", "node-b")
    assert read_from(ip, 8080) == f"hi from {ip}".encode()
    deploy = wait_for(lambda: (d := get(kube_api, "/apis/apps/v1/namespaces/default/deployments/echo"))
                      and d["status"].get("readyReplicas") == 1 and d, what="deployment status")
    assert deploy["status"]["observedGeneration"] == 1
