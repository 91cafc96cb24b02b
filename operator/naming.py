"""Identity, names, labels and owner references of a VineWorkflow's children.

Exists so that every part of the operator (manifest builders, handlers, the autoscaler's
pod listing) derives a child's name and labels the same way: `<workflow>-manager`,
`<workflow>-worker-<suffix>`, the `app.kubernetes.io/*` labels plus
`kubevine.io/workflow`, and an owner reference with `controller: true` and
`blockOwnerDeletion: true` so that deleting the workflow garbage-collects everything.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubevine.operator.spec import VineWorkflowSpec

GROUP = "kubevine.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VineWorkflow"
PLURAL = "vineworkflows"

REDIS_PORT = 6379

COMPONENT_MANAGER = "manager"
COMPONENT_WORKER = "worker"
COMPONENT_REDIS = "redis"
COMPONENT_APPLICATION = "application"
COMPONENT_TOKEN = "token"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_WORKFLOW = "kubevine.io/workflow"
MANAGED_BY = "kubevine-operator"
#: Pods with this label set to a workflow's name may reach its manager when the operator's
#: NetworkPolicies are on (clients: notebooks, scripts in the cluster).
LABEL_CLIENT = "kubevine.io/client"
#: Annotation on every child: a hash of the manifest the operator last applied, so that a
#: child is patched only when what the operator wants changed (the API server's defaults and
#: normalised quantities never look like drift).
ANNOTATION_APPLIED = "kubevine.io/applied"

_SUFFIX_RE = re.compile(r"^[a-z0-9]{1,10}$")


@dataclass(frozen=True)
class WorkflowRef:
    """Identity of the VineWorkflow that owns the objects being built."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WorkflowRef:
        """From a VineWorkflow object as kopf or the API returns it."""
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


# --- names -------------------------------------------------------------------------------


def manager_name(ref: WorkflowRef) -> str:
    """Name of the manager Deployment and Service."""
    return f"{ref.name}-manager"


def redis_name(ref: WorkflowRef) -> str:
    """Name of the managed Redis StatefulSet and Service."""
    return f"{ref.name}-redis"


def token_secret_name(ref: WorkflowRef) -> str:
    """Name of the Secret holding the workflow token (and the managed Redis password)."""
    return f"{ref.name}-token"


def application_job_name(ref: WorkflowRef) -> str:
    """Name of the application Job."""
    return f"{ref.name}-app"


def disruption_budget_name(ref: WorkflowRef, component: str) -> str:
    """Name of the PodDisruptionBudget of the manager or the managed Redis."""
    return f"{ref.name}-{component}"


def network_policy_name(ref: WorkflowRef, component: str) -> str:
    """Name of the NetworkPolicy that admits the flows into one component's pods."""
    return f"{ref.name}-{component}"


def node_cache_folder(root: str, ref: WorkflowRef) -> str:
    """The node cache folder of the workflow's namespace: `<root>/<namespace>` (every workflow
    of a namespace shares it; no other namespace sees it)."""
    return f"{root.rstrip('/')}/{ref.namespace}"


def worker_pod_name(ref: WorkflowRef, suffix: str) -> str:
    """`<workflow>-worker-<suffix>`; the caller draws the suffix (e.g. `secrets.token_hex(3)`)."""
    if not _SUFFIX_RE.match(suffix):
        raise ValueError(f"worker pod suffix must be 1-10 lowercase letters/digits: {suffix!r}")
    return f"{ref.name}-worker-{suffix}"


def manager_address(ref: WorkflowRef, spec: VineWorkflowSpec) -> str:
    """`host:port` of the manager for workers and applications, via its Service."""
    return f"{manager_name(ref)}.{ref.namespace}.svc:{spec.manager.port}"


def managed_redis_url(ref: WorkflowRef) -> str:
    """URL of the Redis the operator runs for a `stateStore.managed` workflow."""
    return f"redis://{redis_name(ref)}.{ref.namespace}.svc:{REDIS_PORT}/0"


# --- labels and metadata -----------------------------------------------------------------


def selector_labels(ref: WorkflowRef, component: str) -> dict[str, str]:
    """The labels that select one component of one workflow (stable: used in selectors)."""
    return {
        LABEL_NAME: "kubevine",
        LABEL_INSTANCE: ref.name,
        LABEL_COMPONENT: component,
    }


def labels(ref: WorkflowRef, component: str) -> dict[str, str]:
    """All the labels of an object of `component`."""
    return {
        **selector_labels(ref, component),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WORKFLOW: ref.name,
    }


def label_selector(ref: WorkflowRef, component: str) -> str:
    """The `labelSelector` query string that lists one component's objects."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(ref, component).items())


def owner_reference(ref: WorkflowRef) -> dict[str, Any]:
    """The owner reference that ties a child to its VineWorkflow for garbage collection."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(ref: WorkflowRef, name: str, component: str) -> dict[str, Any]:
    """`metadata` of a child: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref, component),
        "ownerReferences": [owner_reference(ref)],
    }
