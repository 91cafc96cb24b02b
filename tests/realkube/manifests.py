"""Small manifest builders for the real tier's tests (pods run the venv's Python: image `kubevine:test`)."""

from __future__ import annotations

import textwrap
from typing import Any

IMAGE = "kubevine:test"  # any image whose name contains "kubevine": command words map to the venv

# Binds the pod IP (from the downward API) and answers every connection with who it is.
ECHO_SERVER = textwrap.dedent("""
    import os, signal, socket, sys
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    ip = os.environ["POD_IP"]
    s = socket.create_server((ip, 8080))
    print("listening on", ip, flush=True)
    while True:
        conn, peer = s.accept()
        conn.sendall(f"hi from {ip} to {peer[0]}".encode())
        conn.close()
""")

POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def container(code: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["python", "-c", code], **extra}


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 5, **spec},
    }


def deployment(name: str, *containers: dict[str, Any], replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 5, **spec},
            },
        },
    }


def echo_deployment(name: str = "echo", replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return deployment(
        name,
        container(
            ECHO_SERVER,
            env=[POD_IP_ENV],
            ports=[{"name": "echo", "containerPort": 8080}],
            readinessProbe={"tcpSocket": {"port": "echo"}, "periodSeconds": 1},
        ),
        replicas=replicas,
        **spec,
    )


def service(name: str, port: int, target: int | str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "main", "port": port, "targetPort": target}]},
    }


def job(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": list(containers), "restartPolicy": "Never", **spec},
            },
        },
    }


def away_from(app: str) -> dict[str, Any]:
    """Required pod anti-affinity: never on a node that runs a pod labelled app=<app>."""
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
