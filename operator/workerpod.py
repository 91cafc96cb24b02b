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
    node_cache_folder,
    worker_pod_name,
)
from kubevine.operator.podparts import (
    CACHE_DIR,
    WORKDIR,
    advertise_env,
    container_security_context,
    encrypt_env,
    field_env,
    image_for,
    json_logs_env,
    pod_security_context,
    scratch_mounts,
    scratch_volumes,
    token_env,
    with_pod_options,
)
from kubevine.operator.quantity import to_mib
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec

Manifest = dict[str, Any]

#: The worker's workdir: a folder it makes itself inside the `work` emptyDir. An emptyDir
#: belongs to root (mode 0777), and the worker makes its workdir private (0700), which only
#: the folder's owner may do.
WORKER_WORKDIR = f"{WORKDIR}/worker"

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

    The node cache (unless the workflow or the operator turns it off) is the hostPath
    folder `<cache root>/<namespace>` (`node_cache_folder`), shared by every worker pod of
    the namespace on that node and passed as `--cache-dir`. The root is the operator's
    setting, never the workflow's; the folder must exist (hostPath type `Directory`) and
    belong to the workers' user: the node-cache DaemonSet prepares it, so no container of
    a workflow ever runs as root. Each worker evicts past the node's limit
    (`KUBEVINE_CACHE_SIZE_MB`); the DaemonSet keeps the node's total under it. Without the
    node cache, the cache is an emptyDir of the worker's own and the pod needs no more than
    the *restricted* Pod Security level.

    The preStop hook drains the worker; the grace period covers `drainTimeoutSeconds`. The
    worker's own idle timeout is 0 (disabled): the operator alone decides when a worker
    leaves. The worker's id is its pod name (`KUBEVINE_WORKER_ID`, also
    `KUBEVINE_POD_NAME`), so the manager's stats map each worker to the pod to delete. The
    worker binds its transfer server to the pod IP (`KUBEVINE_BIND_HOST`), the address
    peers are told.
    """
    workers = spec.workers
    image = image_for(spec, settings)
    shared = uses_node_cache(spec, settings)
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
        WORKER_WORKDIR,
    ]
    container = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": args,
        "env": [
            token_env(ref),
            field_env("KUBEVINE_BIND_HOST", "status.podIP"),
            advertise_env(),
            field_env("KUBEVINE_NODE_NAME", "spec.nodeName"),
            field_env("KUBEVINE_POD_NAME", "metadata.name"),
            field_env("KUBEVINE_WORKER_ID", "metadata.name"),
            encrypt_env(spec),
            json_logs_env(),
            *(
                [{"name": "KUBEVINE_CACHE_SIZE_MB", "value": str(to_mib(settings.node_cache_size_limit))}]
                if shared
                else []
            ),
        ],
        "resources": worker_resources(spec),
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "kubevine",
                        "drain-local",
                        "--workdir",
                        WORKER_WORKDIR,
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
    cache_volume: dict[str, Any] = (
        {"hostPath": {"path": node_cache_folder(settings.node_cache_root, ref), "type": "Directory"}}
        if shared
        else {"emptyDir": {}}
    )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": worker_grace_period(spec),
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [*scratch_volumes(workers.disk or None), {"name": "node-cache", **cache_volume}],
    }
    template_metadata = metadata(ref, worker_pod_name(ref, suffix), COMPONENT_WORKER)
    with_pod_options(pod_spec, template_metadata, container, workers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": template_metadata, "spec": pod_spec}


def uses_node_cache(spec: VineWorkflowSpec, settings: OperatorSettings) -> bool:
    """Whether the workflow's workers share their node's cache folder (both the operator and
    the workflow allow it)."""
    return settings.node_cache_enabled and spec.workers.node_cache.enabled
