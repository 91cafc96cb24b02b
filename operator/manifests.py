"""The Kubernetes objects of one VineWorkflow (except worker pods), built by pure functions.

Exists so that every object the operator creates is decided here, from the parsed spec
alone, and tested without a cluster: kopf handlers stay thin (look up, call a
`build_*()`, create idempotently). No function here does I/O, reads a clock or draws a
random number; anything variable (the token, the Redis password) is passed in.

Every object carries the labels and owner reference of `kubevine.operator.naming`.
Worker pods are built one at a time by `kubevine.operator.workerpod`.
"""

from __future__ import annotations

import base64
from typing import Any

from kubevine.operator.naming import (
    COMPONENT_APPLICATION,
    COMPONENT_MANAGER,
    COMPONENT_REDIS,
    COMPONENT_TOKEN,
    REDIS_PORT,
    WorkflowRef,
    application_job_name,
    disruption_budget_name,
    labels,
    managed_redis_url,
    manager_address,
    manager_name,
    metadata,
    redis_name,
    selector_labels,
    token_secret_name,
)
from kubevine.operator.podparts import (
    BIND_ALL,
    REDIS_PASSWORD_KEY,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_KEY,
    WORKDIR,
    advertise_env,
    container_security_context,
    encrypt_env,
    image_for,
    json_logs_env,
    pod_security_context,
    scratch_mounts,
    scratch_volumes,
    secret_env,
    token_env,
    with_pod_options,
)
from kubevine.operator.policies import build_network_policies
from kubevine.operator.quantity import to_mib
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import MANAGER_METRICS_PORT, VineWorkflowSpec

Manifest = dict[str, Any]

#: The redis user of the official redis image.
REDIS_USER = 999


# --- token Secret ------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def build_token_secret(ref: WorkflowRef, token: str, redis_password: str | None = None) -> Manifest:
    """The Secret with the token workers and clients present to the manager.

    For a managed state store it also holds the Redis password. Values go in `data`
    (base64), which every API server accepts as is.
    """
    if not token:
        raise ValueError("the workflow token must not be empty")
    data = {TOKEN_KEY: _b64(token)}
    if redis_password is not None:
        data[REDIS_PASSWORD_KEY] = _b64(redis_password)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(ref, token_secret_name(ref), COMPONENT_TOKEN),
        "type": "Opaque",
        "data": data,
    }


# --- manager -----------------------------------------------------------------------------


def _redis_env_and_args(ref: WorkflowRef, spec: VineWorkflowSpec) -> tuple[list[Any], list[str]]:
    """The manager's Redis settings: `--redis URL` when the URL is not secret, else env."""
    store = spec.state_store
    env: list[dict[str, Any]] = []
    args: list[str] = []
    if store.managed:
        args = ["--redis", managed_redis_url(ref)]
        env.append(secret_env("KUBEVINE_REDIS_PASSWORD", token_secret_name(ref), REDIS_PASSWORD_KEY))
        return env, args
    if store.redis_url is not None:
        args = ["--redis", store.redis_url]
    secret = store.credentials_secret
    if secret is not None:
        if secret.url_key is not None:
            env.append(secret_env("KUBEVINE_REDIS_URL", secret.name, secret.url_key))
        password = secret_env("KUBEVINE_REDIS_PASSWORD", secret.name, secret.password_key)
        password["valueFrom"]["secretKeyRef"]["optional"] = True
        env.append(password)
    return env, args


def build_manager_deployment(
    ref: WorkflowRef, spec: VineWorkflowSpec, settings: OperatorSettings
) -> Manifest:
    """The manager: one replica, `Recreate` so two managers never overlap on one store.

    It binds every address of its pod (`--host 0.0.0.0`): workers and the operator reach it
    at the pod IP, and `kubectl port-forward`, which connects to 127.0.0.1 inside the pod,
    reaches it too; `KUBEVINE_ADVERTISE_HOST` is the pod IP it tells others. Ready when its
    ZeroMQ port accepts connections; alive while `/healthz` answers on the metrics port. The
    workdir and /tmp are emptyDirs under a read-only root filesystem.
    """
    port = spec.manager.port
    redis_env, redis_args = _redis_env_and_args(ref, spec)
    container = {
        "name": "manager",
        "image": image_for(spec, settings),
        "imagePullPolicy": spec.image_pull_policy,
        "args": [
            "manager",
            "--port",
            str(port),
            "--name",
            ref.name,
            "--host",
            BIND_ALL,
            *redis_args,
            "--token-file",
            TOKEN_FILE,
            "--workdir",
            WORKDIR,
            "--metrics-port",
            str(MANAGER_METRICS_PORT),
        ],
        "env": [
            advertise_env(),
            token_env(ref),
            encrypt_env(spec),
            json_logs_env(),
            *redis_env,
        ],
        "ports": [
            {"name": "zmq", "containerPort": port, "protocol": "TCP"},
            {
                "name": "metrics",
                "containerPort": MANAGER_METRICS_PORT,
                "protocol": "TCP",
            },
        ],
        "readinessProbe": {
            "tcpSocket": {"port": port},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": MANAGER_METRICS_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": spec.manager.resources.to_k8s(),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *scratch_mounts(),
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            *scratch_volumes(),
            {
                "name": "token",
                "secret": {
                    "secretName": token_secret_name(ref),
                    "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                    "defaultMode": 0o440,
                },
            },
        ],
    }
    template_metadata: dict[str, Any] = {
        "labels": labels(ref, COMPONENT_MANAGER),
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(MANAGER_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
    }
    with_pod_options(pod_spec, template_metadata, container, spec.manager)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ref, manager_name(ref), COMPONENT_MANAGER),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(ref, COMPONENT_MANAGER)},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def build_manager_service(ref: WorkflowRef, spec: VineWorkflowSpec) -> Manifest:
    """ClusterIP Service `<workflow>-manager`: ZeroMQ for workers/clients, and metrics."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ref, manager_name(ref), COMPONENT_MANAGER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ref, COMPONENT_MANAGER),
            "ports": [
                {
                    "name": "zmq",
                    "port": spec.manager.port,
                    "targetPort": spec.manager.port,
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": MANAGER_METRICS_PORT,
                    "targetPort": MANAGER_METRICS_PORT,
                    "protocol": "TCP",
                },
            ],
        },
    }


# --- managed Redis -----------------------------------------------------------------------


def build_redis_statefulset(ref: WorkflowRef, spec: VineWorkflowSpec, settings: OperatorSettings) -> Manifest:
    """A one-replica Redis with an append-only file (fsync every second) on a PVC.

    The password comes from the token Secret; the PVC is deleted with the StatefulSet
    (`persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`), so deleting the
    workflow leaves no volume behind. It binds every address of its pod (so a port-forward
    reaches it). Its memory is `stateStore.memory` (request = limit) and `maxmemory` is 80% of
    that with `noeviction`: a full state store refuses writes (the manager says so) instead of
    being killed by the kernel or silently dropping workflow state.
    """
    store = spec.state_store
    if not store.managed:
        raise ValueError("build_redis_statefulset is only for stateStore.managed workflows")
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": store.storage_size}},
    }
    if store.storage_class_name is not None:
        claim_spec["storageClassName"] = store.storage_class_name
    container = {
        "name": "redis",
        "image": settings.redis_image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["redis-server"],
        "args": [
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            "/data",
            "--bind",
            BIND_ALL,
            "--port",
            str(REDIS_PORT),
            "--requirepass",
            "$(REDIS_PASSWORD)",
            "--maxmemory",
            str(redis_maxmemory(store.memory)),
            "--maxmemory-policy",
            "noeviction",
        ],
        "env": [
            secret_env("REDIS_PASSWORD", token_secret_name(ref), REDIS_PASSWORD_KEY),
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 5},
        "livenessProbe": {
            "tcpSocket": {"port": REDIS_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": store.memory},
            "limits": {"memory": store.memory},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(ref, redis_name(ref), COMPONENT_REDIS),
        "spec": {
            "replicas": 1,
            "serviceName": redis_name(ref),
            "selector": {"matchLabels": selector_labels(ref, COMPONENT_REDIS)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {"labels": labels(ref, COMPONENT_REDIS)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(REDIS_USER),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {
                        "name": "data",
                        "labels": labels(ref, COMPONENT_REDIS),
                    },
                    "spec": claim_spec,
                }
            ],
        },
    }


def redis_maxmemory(memory: str) -> int:
    """Redis's `maxmemory` in bytes for a container of `memory`: 80% of it, the rest for
    Redis's own overhead and the append-only file's rewrite buffer."""
    return to_mib(memory) * 1024 * 1024 * 8 // 10


def build_redis_service(ref: WorkflowRef) -> Manifest:
    """ClusterIP Service `<workflow>-redis` in front of the managed Redis."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ref, redis_name(ref), COMPONENT_REDIS),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ref, COMPONENT_REDIS),
            "ports": [
                {
                    "name": "redis",
                    "port": REDIS_PORT,
                    "targetPort": REDIS_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


# --- application -------------------------------------------------------------------------


def build_application_job(ref: WorkflowRef, spec: VineWorkflowSpec, settings: OperatorSettings) -> Manifest:
    """The application, run against the manager once the manager is ready (the operator
    creates the Job only then, so the application's first connection finds it).

    `backoffLimit` is the spec's (default 2): a pod lost with its node, or an application that
    exits non-zero, runs again against the same manager (what it submitted before is still
    there). The Job is never patched: its template is immutable.
    """
    app = spec.application
    if app is None:
        raise ValueError("build_application_job needs spec.application")
    container: dict[str, Any] = {
        "name": "application",
        "image": app.image or image_for(spec, settings),
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(app.command),
        "workingDir": WORKDIR,
        "env": [
            {"name": "KUBEVINE_MANAGER", "value": manager_address(ref, spec)},
            token_env(ref),
            encrypt_env(spec),
        ],
        "resources": app.resources.to_k8s(),
        "securityContext": container_security_context(),
        "volumeMounts": scratch_mounts(),
    }
    if app.args:
        container["args"] = list(app.args)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": scratch_volumes(),
    }
    template_metadata: dict[str, Any] = {"labels": labels(ref, COMPONENT_APPLICATION)}
    with_pod_options(pod_spec, template_metadata, container, app)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ref, application_job_name(ref), COMPONENT_APPLICATION),
        "spec": {
            "backoffLimit": app.backoff_limit,
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


# --- disruption budgets ------------------------------------------------------------------


def build_disruption_budgets(ref: WorkflowRef, spec: VineWorkflowSpec) -> list[Manifest]:
    """PodDisruptionBudgets with `maxUnavailable: 0` for the manager (and the managed Redis):
    a node drain (a voluntary eviction) never takes them down while the workflow exists; it
    waits until the workflow is deleted or someone deletes the pod on purpose. Workers need
    none: a drained worker's preStop hook hands its tasks back."""
    components = [COMPONENT_MANAGER] + ([COMPONENT_REDIS] if spec.state_store.managed else [])
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(ref, disruption_budget_name(ref, component), component),
            "spec": {
                "maxUnavailable": 0,
                "selector": {"matchLabels": selector_labels(ref, component)},
            },
        }
        for component in components
    ]


# --- all together ------------------------------------------------------------------------


def build_children(
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    settings: OperatorSettings,
    *,
    token: str,
    redis_password: str | None = None,
) -> list[Manifest]:
    """Every child except worker pods, in the order to create them.

    The token Secret comes first (pods reference it), the state store before the
    manager, the manager before the application, the policies last. `redis_password` is
    required for a managed state store.
    """
    if spec.state_store.managed and not redis_password:
        raise ValueError("a managed state store needs a redis_password")
    children = [build_token_secret(ref, token, redis_password if spec.state_store.managed else None)]
    if spec.state_store.managed:
        children += [
            build_redis_service(ref),
            build_redis_statefulset(ref, spec, settings),
        ]
    children += [
        build_manager_service(ref, spec),
        build_manager_deployment(ref, spec, settings),
    ]
    if spec.application is not None:
        children.append(build_application_job(ref, spec, settings))
    if settings.pod_disruption_budgets:
        children += build_disruption_budgets(ref, spec)
    if settings.network_policy:
        children += build_network_policies(ref, spec, settings)
    return children
