"""Driving the real kubevine operator end to end: the CRDs, the operator process, workflows.

What the end-to-end tests (and `bench/autoscale.py`) share: apply the chart's CRDs with
kubectl, run `kubevine operator` as a subprocess against the emulator, apply a
VineWorkflow, find its manager's pod IP and token the way a user would (kubectl), and
read back from the emulator's event log what happened to the worker pods over time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from .emulator import KubeAPI
from .helpers import KUBECTL, kubectl, kubectl_json, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "charts" / "kubevine" / "crds"
KUBEVINE = str(pathlib.Path(sys.executable).parent / "kubevine")
WORKER_SELECTOR = "app.kubernetes.io/component=worker"

#: Operator settings that make a test run in seconds rather than minutes.
FAST_SETTINGS = {
    "KUBEVINE_OPERATOR_SCALE_INTERVAL_SECONDS": "1",
    "KUBEVINE_OPERATOR_STABILIZATION_SECONDS": "3",
    "KUBEVINE_OPERATOR_STATS_MAX_AGE_SECONDS": "10",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_crds(api: KubeAPI, binary: str = KUBECTL) -> None:
    """`kubectl apply` the chart's CRDs (the single source of the API) and wait until served."""
    kubectl(api, "apply", "-f", str(CRDS), binary=binary)
    wait_for(
        lambda: kubectl(api, "get", "vw", binary=binary, check=False).returncode == 0,
        timeout=10,
        what="the VineWorkflow resource to be served",
    )


class OperatorProcess:
    """`kubevine operator` run as a subprocess against the emulator, logging to a file."""

    def __init__(
        self,
        api: KubeAPI,
        log_path: pathlib.Path,
        *args: str,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.log_path = log_path
        self.args = list(args) or ["--namespace", "default", "--standalone"]
        self.health = f"http://127.0.0.1:{free_port()}/healthz"
        self.metrics_port = free_port()
        self.env = {k: v for k, v in api.env.items() if k != "KUBEVINE_LOG_FORMAT"}
        self.env.update({**FAST_SETTINGS, **(settings or {})})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                KUBEVINE,
                "operator",
                *self.args,
                "--liveness",
                self.health,
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-host",
                "127.0.0.1",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        log.close()
        return self

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.health, timeout=1) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape of the operator's /metrics: (sample name, sorted labels) -> value."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            text = rsp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to finish what it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


@contextlib.contextmanager
def running_operator(
    api: KubeAPI, log_path: pathlib.Path, *args: str, settings: dict[str, str] | None = None
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(api, log_path, *args, settings=settings).start()
    try:
        wait_for(operator.healthy, timeout=20, interval=0.1, what="the operator to be live")
        yield operator
    except AssertionError as e:  # whatever the test waited for, the operator's log says why
        raise AssertionError(f"{e}\n--- operator log (tail) ---\n{operator.log_tail(8000)}") from e
    finally:
        operator.stop()


def workflow(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevine.io/v1alpha1",
        "kind": "VineWorkflow",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def pool_spec(**workers: Any) -> dict[str, Any]:
    """A workflow spec with a managed Redis and small one-core workers."""
    return {
        "image": "ghcr.io/kubevine/kubevine:dev",
        "stateStore": {"managed": True},
        "workers": {
            "min": 0,
            "max": 3,
            "cores": 1,
            "memory": 256,
            "disk": 0,
            "idleTimeoutSeconds": 3,
            "drainTimeoutSeconds": 20,
            **workers,
        },
    }


def apply(api: KubeAPI, manifest: dict[str, Any], binary: str = KUBECTL) -> None:
    kubectl(api, "apply", "-f", "-", stdin=json.dumps(manifest), binary=binary)


def vw(api: KubeAPI, name: str, binary: str = KUBECTL) -> dict[str, Any]:
    result: dict[str, Any] = kubectl_json(api, "get", "vw", name, binary=binary)
    return result


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def pods(api: KubeAPI, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(api, "get", "pods", "-l", selector)["items"]
    return items


def worker_pods(api: KubeAPI, name: str) -> list[dict[str, Any]]:
    return pods(api, f"{WORKER_SELECTOR},kubevine.io/workflow={name}")


def manager_address(api: KubeAPI, name: str, timeout: float = 40) -> str:
    """The Ready manager pod's IP:port (the process kubelet gives each pod its own IP)."""

    def ready() -> str | None:
        for pod in pods(api, f"app.kubernetes.io/component=manager,kubevine.io/workflow={name}"):
            status = pod.get("status") or {}
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []):
                return f"{status['podIP']}:9123"
        return None

    address = wait_for(ready, timeout=timeout, interval=0.2, what=f"the manager of {name} to be Ready")
    assert address is not None
    return address


def token(api: KubeAPI, name: str) -> str:
    secret = kubectl_json(api, "get", "secret", f"{name}-token")
    return base64.b64decode(secret["data"]["token"]).decode()


def events(api: KubeAPI, name: str) -> list[dict[str, Any]]:
    items = kubectl_json(api, "get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in items if e.get("involvedObject", {}).get("kind") == "VineWorkflow"]


def event_reasons(api: KubeAPI, name: str) -> list[str]:
    return [e["reason"] for e in events(api, name)]


def worker_pod_history(api: KubeAPI, workflow_name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every change to the workflow's worker pods, from the emulator's event log, in order:
    (event type, pod name, pod)."""

    def read(store: Any) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for event in store.log:
            if event.key != ("", "pods"):
                continue
            labels = event.obj.get("metadata", {}).get("labels") or {}
            if labels.get("app.kubernetes.io/component") == "worker" and (
                labels.get("kubevine.io/workflow") == workflow_name
            ):
                out.append((event.type, event.obj["metadata"]["name"], json.loads(json.dumps(event.obj))))
        return out

    result: list[tuple[str, str, dict[str, Any]]] = api.call(read)
    return result


def most_pods_at_once(history: list[tuple[str, str, dict[str, Any]]]) -> int:
    """The largest number of worker pods that existed at the same time."""
    alive: set[str] = set()
    most = 0
    for kind, name, _ in history:
        if kind == "DELETED":
            alive.discard(name)
        else:
            alive.add(name)
        most = max(most, len(alive))
    return most


def last_states(history: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each pod's last recorded worker container state (`terminated`, `running`, ...)."""
    states: dict[str, dict[str, Any]] = {}
    for _, name, pod in history:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == "worker" and status.get("state"):
                states[name] = status["state"]
    return states
