"""The worker pod, built by a pure function.

Exists apart from `manifests` because a worker is the one child the operator creates
many of, one at a time, under a name chosen at creation (`<workflow>-worker-<suffix>`,
the suffix drawn by the caller so that building stays pure), and because the choice of
managing bare pods at all needs its own explanation (see `build_worker_pod`).
"""

from __future__ import annotations

from typing import Any

from kubevine.operator.naming import (
    COMPONENT_WORKER,
    WorkflowRef,
    manager_address,
    metadata,
    worker_pod_name,
)
from kubevine.operator.podparts import (
    CACHE_DIR,
    RUN_AS_USER,
    WORKDIR,
    container_security_context,
    field_env,
    image_for,
    json_logs_env,
    placement,
    pod_security_context,
    scratch_mounts,
    scratch_volumes,
    token_env,
    user_env,
)
from kubevine.operator.quantity import to_mib
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec

Manifest = dict[str, Any]

#: Extra seconds of a worker pod's grace period beyond its drain timeout: time for the
#: worker to report its last results and exit after the preStop hook returned.
WORKER_GRACE_MARGIN_SECONDS = 30


def worker_resources(spec: VineWorkflowSpec) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS), so a worker's advertised size is real."""
    workers = spec.workers
    amounts: dict[str, Any] = {
        "cpu": str(workers.cores),
        "memory": f"{workers.memory}Mi",
    }
    if workers.disk > 0:
        amounts["ephemeral-storage"] = f"{workers.disk}Mi"
    if workers.gpus > 0:
        amounts["nvidia.com/gpu"] = str(workers.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def worker_grace_period(spec: VineWorkflowSpec) -> int:
    """Seconds Kubernetes waits before SIGKILL: the drain timeout plus a margin."""
    return spec.workers.drain_timeout_seconds + WORKER_GRACE_MARGIN_SECONDS


def build_worker_pod(
    ref: WorkflowRef, spec: VineWorkflowSpec, suffix: str, settings: OperatorSettings
) -> Manifest:
    """One worker pod, `<workflow>-worker-<suffix>`.

    Why the operator manages bare pods instead of a Deployment: scale-down must remove
    exactly the worker the autoscaler chose — one that has been idle past its timeout,
    runs no task, holds no only-copy of a temp file, and has been drained by the manager.
    A Deployment picks its own victims when its replica count drops; the
    `controller.kubernetes.io/pod-deletion-cost` annotation only biases that choice
    (best effort, racing with the ReplicaSet controller), so a busy worker could still be
    killed, losing its running tasks and its temp files. Owning pods directly lets the
    operator drain first and delete second, the way dask-kubernetes (DaskWorkerGroup)
    and KubeRay (RayCluster worker groups) manage their workers.

    The node cache is a hostPath directory (DirectoryOrCreate) shared by every worker
    pod on the node and passed as `--cache-dir`. The preStop hook drains the worker; the
    grace period covers `drainTimeoutSeconds`. The worker's own idle timeout is 0
    (disabled): the operator alone decides when a worker leaves. The worker's id is its
    pod name (`KUBEVINE_WORKER_ID`, also `KUBEVINE_POD_NAME`), so the manager's stats map
    each worker to the pod to delete.
    """
    workers = spec.workers
    image = image_for(spec, settings)
    args = [
        "worker",
        manager_address(ref, spec),
        "--cores",
        str(workers.cores),
        "--memory",
        str(workers.memory),
        "--disk",
        str(workers.disk),
        "--gpus",
        str(workers.gpus),
        "--cache-dir",
        CACHE_DIR,
        "--node",
        "$(KUBEVINE_NODE_NAME)",
        "--idle-timeout",
        "0",
        "--workdir",
        WORKDIR,
    ]
    container = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": args,
        "env": [
            token_env(ref),
            field_env("KUBEVINE_BIND_HOST", "status.podIP"),
            field_env("KUBEVINE_NODE_NAME", "spec.nodeName"),
            field_env("KUBEVINE_POD_NAME", "metadata.name"),
            field_env("KUBEVINE_WORKER_ID", "metadata.name"),
            json_logs_env(),
            {
                "name": "KUBEVINE_CACHE_SIZE_MB",
                "value": str(to_mib(workers.node_cache.size_limit)),
            },
            *user_env(workers.env),
        ],
        "resources": worker_resources(spec),
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "kubevine",
                        "drain-local",
                        "--workdir",
                        WORKDIR,
                        "--timeout",
                        str(workers.drain_timeout_seconds),
                    ]
                }
            }
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            *scratch_mounts(),
            {"name": "node-cache", "mountPath": CACHE_DIR},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": worker_grace_period(spec),
        "securityContext": pod_security_context(),
        **placement(workers.node_selector, workers.tolerations),
        "containers": [container],
        "volumes": [
            *scratch_volumes(workers.disk or None),
            {
                "name": "node-cache",
                "hostPath": {
                    "path": workers.node_cache.host_path,
                    "type": "DirectoryOrCreate",
                },
            },
        ],
    }
    if workers.node_cache.init_permissions:
        pod_spec["initContainers"] = [_cache_permissions_container(image, spec)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(ref, worker_pod_name(ref, suffix), COMPONENT_WORKER),
        "spec": pod_spec,
    }


def _cache_permissions_container(image: str, spec: VineWorkflowSpec) -> dict[str, Any]:
    """Hands the node cache directory to the workers' user.

    The kubelet creates a missing hostPath directory owned by root (0755), which the
    non-root workers could not write. This init container runs as root with a single
    capability, CHOWN, and changes the owner of that one directory (not recursively).
    """
    security = container_security_context()
    security.update(
        {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        }
    )
    return {
        "name": "cache-permissions",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["chown", f"{RUN_AS_USER}:{RUN_AS_USER}", CACHE_DIR],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": security,
        "volumeMounts": [{"name": "node-cache", "mountPath": CACHE_DIR}],
    }
