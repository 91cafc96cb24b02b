"""Pieces shared by every pod the operator creates: hardening, env, scratch volumes.

Exists so that the manager, worker, Redis and application pods are hardened the same
way (non-root fixed user, read-only root filesystem, no capabilities, RuntimeDefault
seccomp, no service-account token) and get their environment from the same helpers.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from kubevine.operator.naming import WorkflowRef, token_secret_name
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import EnvVar, PodOptions, Toleration, VineWorkflowSpec

#: The non-root user of the kubevine image (docker/Dockerfile).
RUN_AS_USER = 10001
#: Every address of the pod: what the manager and Redis bind, so that a connection to the pod
#: IP (workers, the operator) and to 127.0.0.1 inside the pod (`kubectl port-forward`) both work.
BIND_ALL = "0.0.0.0"

WORKDIR = "/var/lib/kubevine/work"
CACHE_DIR = "/var/cache/kubevine"
TOKEN_DIR = "/var/run/kubevine"
TOKEN_KEY = "token"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_KEY}"
REDIS_PASSWORD_KEY = "redis-password"


def pod_security_context(user: int = RUN_AS_USER) -> dict[str, Any]:
    """Pod-level hardening: a fixed non-root user, the runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container hardening: no privilege escalation, read-only root, no capabilities."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def field_env(name: str, field_path: str) -> dict[str, Any]:
    """An env var from the downward API (`status.podIP`, `spec.nodeName`)."""
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def json_logs_env() -> dict[str, Any]:
    """`KUBEVINE_LOG_FORMAT=json`: JSON log lines, whichever position the CLI parses the
    `--log-format` flag in."""
    return {"name": "KUBEVINE_LOG_FORMAT", "value": "json"}


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """An env var from one key of a Secret."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def token_env(ref: WorkflowRef) -> dict[str, Any]:
    """`KUBEVINE_TOKEN` from the workflow's token Secret."""
    return secret_env("KUBEVINE_TOKEN", token_secret_name(ref), TOKEN_KEY)


def user_env(env: list[EnvVar] | None) -> list[dict[str, Any]]:
    """The spec's extra env entries as core/v1 EnvVars."""
    return [e.to_k8s() for e in env or []]


def tolerations_k8s(tolerations: list[Toleration] | None) -> list[dict[str, Any]]:
    """The spec's tolerations as core/v1 Tolerations."""
    return [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations or []]


def scratch_volumes(work_limit_mib: int | None = None) -> list[dict[str, Any]]:
    """emptyDirs for the workdir (optionally size-limited) and /tmp: the root is read-only."""
    work: dict[str, Any] = {}
    if work_limit_mib:
        work["sizeLimit"] = f"{work_limit_mib}Mi"
    return [{"name": "work", "emptyDir": work}, {"name": "tmp", "emptyDir": {}}]


def scratch_mounts() -> list[dict[str, Any]]:
    """Mounts of `scratch_volumes`."""
    return [
        {"name": "work", "mountPath": WORKDIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def image_for(spec: VineWorkflowSpec, settings: OperatorSettings) -> str:
    """The workflow's image, or the operator's default when the spec names none."""
    return spec.image or settings.default_image


def encrypt_env(spec: VineWorkflowSpec) -> dict[str, Any]:
    """`KUBEVINE_ENCRYPT`: 1 when the workflow's wire is encrypted (ZeroMQ CURVE, keys derived
    from the token), else 0 — set either way, so an image default never decides it."""
    return {"name": "KUBEVINE_ENCRYPT", "value": "1" if spec.security.encrypt else "0"}


def advertise_env() -> dict[str, Any]:
    """`KUBEVINE_ADVERTISE_HOST`: the pod IP, the address a process that binds all addresses
    tells others to reach it at."""
    return field_env("KUBEVINE_ADVERTISE_HOST", "status.podIP")


def with_pod_options(
    pod_spec: dict[str, Any],
    template_metadata: dict[str, Any],
    container: dict[str, Any],
    options: PodOptions,
) -> None:
    """Add a component's site options to a pod spec being built (in place).

    What the operator sets wins: its labels (the selectors), its env (`KUBEVINE_*`), its
    volumes and mounts come first; a workflow's own are added after them. The pod keeps no
    service-account token unless `automountServiceAccountToken` asks for one.
    """
    if options.node_selector:
        pod_spec["nodeSelector"] = {**dict(options.node_selector), **pod_spec.get("nodeSelector", {})}
    if options.tolerations:
        pod_spec["tolerations"] = [*pod_spec.get("tolerations", []), *tolerations_k8s(options.tolerations)]
    if options.affinity:
        pod_spec["affinity"] = dict(options.affinity)
    if options.priority_class_name:
        pod_spec["priorityClassName"] = options.priority_class_name
    if options.service_account_name:
        pod_spec["serviceAccountName"] = options.service_account_name
    pod_spec["automountServiceAccountToken"] = options.automount_service_account_token
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": r.name} for r in options.image_pull_secrets]
    if options.pod_labels:
        template_metadata["labels"] = {**dict(options.pod_labels), **template_metadata.get("labels", {})}
    if options.pod_annotations:
        template_metadata["annotations"] = {
            **dict(options.pod_annotations),
            **template_metadata.get("annotations", {}),
        }
    if options.volumes:
        pod_spec["volumes"] = [*pod_spec.get("volumes", []), *(v.to_k8s() for v in options.volumes)]
    if options.volume_mounts:
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            *(m.to_k8s() for m in options.volume_mounts),
        ]
    if options.env:
        container["env"] = [*container.get("env", []), *user_env(options.env)]
    if options.env_from:
        container["envFrom"] = [e.model_dump(by_alias=True, exclude_none=True) for e in options.env_from]
