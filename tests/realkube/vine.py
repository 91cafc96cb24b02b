"""The kubevine chart and operator on the real control plane: install, workflows, clients.

What the real tier's end-to-end tests share: `Release` installs `charts/kubevine` with the
helm CLI built from helm.sh/helm/v4 (hack/cluster), the operator then runs as a pod the real
scheduler places, as the chart's ServiceAccount under the chart's RBAC; `workflow()` and
`pool_spec()` build VineWorkflows; `Workflows` reads them back, finds the manager's pod IP and
token the way a user would, and runs tasks from the test process (which reaches every pod
IP). `operator_requests()` reads the API server's audit log for what the operator called.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import yaml

from kubevine import Manager, Task

from .controlplane import REPO, Cluster, Settings, _rfc3339, ensure_binaries
from .helpers import Kube, is_ready, wait_for

CHART = REPO / "charts" / "kubevine"
CRDS = CHART / "crds"
#: The chart's image: any image whose name contains "kubevine" runs the local CLI here.
IMAGE = "ghcr.io/kubevine/kubevine:0.1.0"

#: Chart values that make a test run in seconds rather than minutes.
FAST_VALUES: dict[str, Any] = {
    "operator": {
        "logFormat": "text",
        "autoscaler": {"intervalSeconds": 1, "stabilizationSeconds": 3, "statsMaxAgeSeconds": 10},
        "failures": {"backoffSeconds": 2, "backoffMaxSeconds": 16, "retentionSeconds": 600, "keptPods": 5},
        "resyncSeconds": 3,
    },
    "nodeCache": {"keeper": {"intervalSeconds": 2, "staleSeconds": 5}},
    # The operator stays on node-a, so that a test may tear down node-b or node-c.
    "nodeSelector": {"kubernetes.io/hostname": "node-a"},
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def helm_binary() -> str:
    return str(ensure_binaries(quiet=True) / "helm")


class Release:
    """One `helm install` of the chart, into `namespace` (made with Pod Security `privileged`:
    the node-cache keeper mounts its root)."""

    def __init__(
        self, cluster: Cluster, namespace: str, name: str = "kv", values: dict[str, Any] | None = None
    ):
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.values = merged(FAST_VALUES, values or {})
        self.kube = Kube(cluster, namespace)
        self.env = dict(cluster.env)
        helm_home = cluster.state_dir / "helm"
        for var in ("CACHE", "CONFIG", "DATA"):
            self.env[f"HELM_{var}_HOME"] = str(helm_home / var.lower())

    @property
    def fullname(self) -> str:
        return self.name if "kubevine" in self.name else f"{self.name}-kubevine"

    @property
    def user(self) -> str:
        """The operator's identity in the audit log: its ServiceAccount."""
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [helm_binary(), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def create_namespace(self) -> None:
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": self.namespace,
                    "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
                },
            }
        )

    def install(self, *extra: str) -> Release:
        values = self.cluster.state_dir / f"values-{self.namespace}-{self.name}.yaml"
        values.write_text(yaml.safe_dump(self.values))
        self.helm("install", self.name, str(CHART), "--namespace", self.namespace, "-f", str(values), *extra)
        return self

    def upgrade(self, values: dict[str, Any]) -> None:
        self.values = merged(self.values, values)
        path = self.cluster.state_dir / f"values-{self.namespace}-{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.values))
        self.helm("upgrade", self.name, str(CHART), "--namespace", self.namespace, "-f", str(path))

    def operator_pods(self) -> list[dict[str, Any]]:
        return self.kube.live_pods(
            f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator"
        )

    def keeper_pods(self) -> list[dict[str, Any]]:
        return self.kube.live_pods(
            f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=node-cache"
        )

    def wait_ready(self, timeout: float = 90, keepers: int = 3) -> dict[str, Any]:
        """The operator pod, once Ready (live and past its CRD check), and the keepers Ready."""
        pods = wait_for(
            lambda: [p for p in self.operator_pods() if is_ready(p)],
            timeout=timeout,
            interval=0.3,
            what=f"the operator of {self.namespace} to be Ready:\n{self.operator_log()}",
        )
        if keepers:
            wait_for(
                lambda: len([p for p in self.keeper_pods() if is_ready(p)]) >= keepers,
                timeout=timeout,
                interval=0.3,
                what="a node-cache keeper Ready on every node",
            )
        return dict(pods[0])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape of the Ready operator's /metrics (at its pod IP, port 9091): (sample
        name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        pods = [p for p in self.operator_pods() if is_ready(p)]
        assert pods, "no Ready operator pod"
        url = f"http://{pods[0]['status']['podIP']}:9091/metrics"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            text = rsp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def operator_log(self) -> str:
        logs = [
            self.kube.log(p["metadata"]["name"], "operator")
            for p in self.kube.pods(
                f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator"
            )
        ]
        return "\n".join(log[-6000:] for log in logs)

    def scale(self, replicas: int) -> None:
        self.kube.kubectl("scale", f"deployment/{self.fullname}", f"--replicas={replicas}")
        if replicas == 0:
            wait_for(
                lambda: (
                    not self.kube.pods(
                        f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator"
                    )
                ),
                timeout=60,
                what="the operator pod to be gone",
            )
        else:
            self.wait_ready(keepers=0)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--namespace", self.namespace, check=False)


@contextlib.contextmanager
def cluster_with_chart(
    state: str,
    name: str,
    net: int,
    nodes: int = 3,
    bandwidth: str | None = None,
    values: dict[str, Any] | None = None,
) -> Iterator[tuple[Cluster, Release]]:
    """For benchmarks: a real cluster of its own (state `.cluster/<state>`, bridge and
    namespaces named `<name>`, nodes on 10.<net>.0.0/16 and pods on 10.<net + 1>.0.0/16, each
    node's link limited to `bandwidth`), the chart installed cluster-wide in `kubevine` with
    the fast test pace unless `values` say otherwise; stopped, leaving nothing, at the end."""
    settings = Settings(
        state=REPO / ".cluster" / state, name=name, nodes=nodes, node_net=f"10.{net}.0.0/16",
        pod_net=f"10.{net + 1}.0.0/16", bandwidth=bandwidth,
    )  # fmt: skip
    cluster = Cluster(settings).start()
    try:
        release = Release(cluster, "kubevine", values=merged({"rbac": {"clusterWide": True}}, values or {}))
        release.create_namespace()
        release.install()
        release.wait_ready(keepers=nodes)
        yield cluster, release
    finally:
        cluster.stop()


def privileged_namespace(cluster: Cluster, name: str) -> Kube:
    kube = Kube(cluster, name)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})  # fmt: skip
    return kube


# --- workflows -------------------------------------------------------------------------------


def workflow(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevine.io/v1alpha1",
        "kind": "VineWorkflow",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool_spec(**workers: Any) -> dict[str, Any]:
    """A managed Redis and small one-core workers that leave after 3 s idle."""
    return {
        "stateStore": {"managed": True, "memory": "256Mi"},
        "manager": {
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
        },
        "workers": {
            "min": 0,
            "max": 3,
            "cores": 1,
            "memory": 512,
            "disk": 0,
            "idleTimeoutSeconds": 3,
            "drainTimeoutSeconds": 20,
            **workers,
        },
    }


def redis_server(password: str = "s3cret-redis", node: str = "node-a") -> list[dict[str, Any]]:
    """A Redis of the namespace's own (a Deployment and Service `redis`, its password in the
    Secret `redis-auth`) for workflows with an external state store, on `node`."""
    labels = {"app": "redis"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "stringData": {"password": password},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "redis"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "containers": [
                            {
                                "name": "redis",
                                "image": "redis:7.4-alpine",
                                "args": [
                                    "--port",
                                    "6379",
                                    "--bind",
                                    "0.0.0.0",
                                    "--requirepass",
                                    "$(PASSWORD)",
                                    "--save",
                                    "",
                                ],
                                "env": [
                                    {
                                        "name": "PASSWORD",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": "redis-auth", "key": "password"}
                                        },
                                    }
                                ],
                                "ports": [{"name": "redis", "containerPort": 6379}],
                                "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis"},
            "spec": {"selector": labels, "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}]},
        },
    ]


def external_store(namespace: str, db: int = 0) -> dict[str, Any]:
    """The stateStore of a workflow that uses `redis_server()`."""
    return {
        "redisUrl": f"redis://redis.{namespace}.svc:6379/{db}",
        "credentialsSecret": {"name": "redis-auth"},
    }


def preferred_spread() -> dict[str, Any]:
    """Preferred anti-affinity among a workflow's workers: one per node when the nodes allow."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def spread() -> dict[str, Any]:
    """Required anti-affinity among a workflow's workers: one per node."""
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


class Workflows:
    """VineWorkflows of one namespace, read the way a user reads them."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply(self, *manifests: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kube.apply(*manifests, check=check)

    def get(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.kube.get(
            f"/apis/kubevine.io/v1alpha1/namespaces/{self.kube.ns}/vineworkflows/{name}"
        )
        return result

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status(name).get("conditions") or []}

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> dict[str, Any]:
        wait_for(lambda: self.phase(name) == phase, timeout=timeout, interval=0.3,
                 what=f"{name} to be {phase} (status: {json.dumps(self.status(name))[:1500]})")  # fmt: skip
        return self.status(name)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.kube.events(name) if e["involvedObject"].get("kind") == "VineWorkflow"]

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def workers(self, name: str, live: bool = True) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/component=worker,kubevine.io/workflow={name}"
        return self.kube.live_pods(selector) if live else self.kube.pods(selector)

    def manager_pod(self, name: str) -> dict[str, Any]:
        pods = wait_for(
            lambda: [
                p
                for p in self.kube.live_pods(
                    f"app.kubernetes.io/component=manager,kubevine.io/workflow={name}"
                )
                if is_ready(p)
            ],
            timeout=90,
            interval=0.3,
            what=f"the manager of {name} to be Ready",
        )
        return dict(pods[0])

    def manager_address(self, name: str) -> str:
        return f"{self.manager_pod(name)['status']['podIP']}:9123"

    def token(self, name: str) -> str:
        secret = self.kube.get(f"/api/v1/namespaces/{self.kube.ns}/secrets/{name}-token")
        return base64.b64decode(secret["data"]["token"]).decode()

    def client(self, name: str, **kwargs: Any) -> Manager:
        return Manager(self.manager_address(name), token=self.token(name), encrypt=True, **kwargs)


def run_all(m: Manager, tasks: list[Task], timeout: float = 120) -> None:
    for task in tasks:
        m.submit(task)
    deadline = time.monotonic() + timeout
    while not m.empty():
        assert time.monotonic() < deadline, f"tasks did not finish in {timeout}s"
        m.wait(1)
    failed = [(t.id, t.result, t.std_output) for t in tasks if not t.successful()]
    assert not failed, failed[:3]


# --- what the operator called ----------------------------------------------------------------


def operator_requests(
    cluster: Cluster, user: str, since: float = 0.0, until: float | None = None
) -> list[dict[str, Any]]:
    """The operator's requests from the audit log: dicts with verb, resource, `what`
    (`group/resource[/subresource]`), namespace, name, code, `received` (unix time)."""
    found = []
    for event in cluster.audit_events(since, until):
        if event.get("user", {}).get("username") != user:
            continue
        ref = event.get("objectRef") or {}
        resource = "/".join(x for x in (ref.get("apiGroup", ""), ref.get("resource", "")) if x) or event.get(
            "requestURI", ""
        )
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        found.append(
            {
                "verb": event.get("verb"),
                "group": ref.get("apiGroup", ""),
                "resource": ref.get("resource", ""),
                "subresource": ref.get("subresource", ""),
                "what": resource,
                "namespace": ref.get("namespace"),
                "name": ref.get("name"),
                "code": (event.get("responseStatus") or {}).get("code"),
                "uri": event.get("requestURI", ""),
                "received": _rfc3339(str(event.get("requestReceivedTimestamp") or "1970-01-01T00:00:00Z")),
            }
        )
    return found


def node_cache_dir(cluster: Cluster, node: str, namespace: str) -> pathlib.Path:
    """Where the node's cache folder for `namespace` is (the process kubelet's host folder)."""
    return cluster.state_dir / "kubelet" / "nodes" / node / "var" / "lib" / "kubevine" / "cache" / namespace


def cached_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
