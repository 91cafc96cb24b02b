"""The emulator's catalogue of resource types: built-in ones and those that CRDs add.

Discovery, routing, status-subresource semantics, strategic-merge support and Table
printing all depend on facts about a resource type (its kind, scope, short names,
subresources, printer columns, schema). They live here, in one place, so that a CRD
posted to the emulator registers exactly the same kind of record as a built-in type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One served resource (group/version/plural) and what clients need to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Strategic merge patch is offered for built-in types only (as in Kubernetes).
    builtin: bool = True
    # additionalPrinterColumns (CRD style: name, type, jsonPath, priority, description).
    printer_columns: tuple[dict[str, Any], ...] = ()
    # The openAPIV3Schema of a CRD version (None: no validation, no pruning).
    schema: dict[str, Any] | None = None
    crd_name: str | None = None
    storage: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def key(self) -> tuple[str, str]:
        """Objects are stored per group and plural, whatever version they are served in."""
        return (self.group, self.plural)

    def url(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    cluster: bool = False,
    short: Iterable[str] = (),
    sub: Iterable[str] = (),
    cats: Iterable[str] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=not cluster,
        short_names=tuple(short),
        subresources=tuple(sub),
        categories=tuple(cats),
    )


BUILTINS: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", cluster=True, short=["ns"], sub=["status"]),
    _rt("", "v1", "nodes", "Node", cluster=True, short=["no"], sub=["status"]),
    _rt("", "v1", "pods", "Pod", short=["po"], sub=["status", "binding", "log", "eviction"], cats=["all"]),
    _rt("", "v1", "services", "Service", short=["svc"], sub=["status"], cats=["all"]),
    _rt("", "v1", "endpoints", "Endpoints", short=["ep"]),
    _rt("", "v1", "secrets", "Secret"),
    _rt("", "v1", "configmaps", "ConfigMap", short=["cm"]),
    _rt("", "v1", "events", "Event", short=["ev"]),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"], sub=["status"]),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", cluster=True, short=["pv"], sub=["status"]),
    _rt("", "v1", "resourcequotas", "ResourceQuota", short=["quota"], sub=["status"]),
    _rt("", "v1", "limitranges", "LimitRange", short=["limits"]),
    _rt("apps", "v1", "deployments", "Deployment", short=["deploy"], sub=["status", "scale"], cats=["all"]),
    _rt("apps", "v1", "statefulsets", "StatefulSet", short=["sts"], sub=["status", "scale"], cats=["all"]),
    _rt("apps", "v1", "replicasets", "ReplicaSet", short=["rs"], sub=["status", "scale"], cats=["all"]),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short=["ds"], sub=["status"], cats=["all"]),
    _rt("batch", "v1", "jobs", "Job", sub=["status"], cats=["all"]),
    _rt("batch", "v1", "cronjobs", "CronJob", short=["cj"], sub=["status"], cats=["all"]),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
    _rt("events.k8s.io", "v1", "events", "Event", short=["ev"]),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"], sub=["status"]),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=["netpol"]),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", cluster=True),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", cluster=True),
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        cluster=True,
        short=["crd", "crds"],
        sub=["status"],
        cats=["api-extensions"],
    ),
)


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types one CRD serves: one per served version."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subresources = ver.get("subresources") or {}
        sub = tuple(name for name in ("status", "scale") if name in subresources)
        result.append(
            ResourceType(
                group=spec.get("group", ""),
                version=ver["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=sub,
                builtin=False,
                printer_columns=tuple(ver.get("additionalPrinterColumns") or ()),
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                crd_name=crd.get("metadata", {}).get("name"),
                storage=bool(ver.get("storage", False)),
            )
        )
    return result


class Registry:
    """All resource types served right now, looked up by group, version and plural."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_crd(self, crd_name: str) -> None:
        for key, rt in list(self._types.items()):
            if rt.crd_name == crd_name:
                del self._types[key]

    def set_crd(self, crd: dict[str, Any]) -> None:
        name = crd.get("metadata", {}).get("name", "")
        self.remove_crd(name)
        for rt in types_from_crd(crd):
            self.add(rt)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        """The storage version (or any served one) of a group and plural."""
        found = [rt for rt in self._types.values() if rt.key == key]
        found.sort(key=lambda rt: not rt.storage)
        return found[0] if found else None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(sorted(self._types.values(), key=lambda rt: (rt.group, rt.version, rt.plural)))

    def groups(self) -> dict[str, list[str]]:
        """Group name → served versions (the core group '' included)."""
        result: dict[str, list[str]] = {}
        for rt in self:
            versions = result.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return result
