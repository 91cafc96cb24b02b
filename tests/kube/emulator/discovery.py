"""API discovery and OpenAPI documents, generated from the live resource registry.

kubectl and kopf find resources through discovery (`/api`, `/apis`, `/api/v1`,
`/apis/<group>/<version>`); kmock reports the core group as "/v1" and never learns
about CRDs. kubectl also reads OpenAPI v3 before `apply` to decide how to validate:
when the document says that PATCH accepts the `fieldValidation` parameter, kubectl
leaves validation to the server (and the emulator validates custom resources against
their CRD schema), so `kubectl apply -f` works without `--validate=false`.
"""

from __future__ import annotations

import re
from typing import Any

from .resources import ALL_VERBS, Registry, ResourceType

Obj = dict[str, Any]

SERVER_VERSION: Obj = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubevine-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUBRESOURCE_KINDS = {
    "status": (None, ["get", "patch", "update"]),
    "scale": ("Scale", ["get", "patch", "update"]),
    "binding": ("Binding", ["create"]),
    "eviction": ("Eviction", ["create"]),
    "log": ("Pod", ["get"]),
}


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, then by number (v1 > v1beta2 > v1alpha1)."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (0, 0, 0)
    stage = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (stage, int(m.group(1)), int(m.group(3) or 0))


def api_versions(host: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _group_doc(group: str, versions: list[str]) -> Obj:
    ordered = sorted(versions, key=_version_priority, reverse=True)
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered],
        "preferredVersion": {"groupVersion": f"{group}/{ordered[0]}", "version": ordered[0]},
    }


def api_group_list(registry: Registry) -> Obj:
    groups = [_group_doc(g, vs) for g, vs in registry.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> Obj | None:
    versions = registry.groups().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _resource_entries(rt: ResourceType) -> list[Obj]:
    entry: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": ALL_VERBS,
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    entries = [entry]
    for sub in rt.subresources:
        kind, verbs = _SUBRESOURCE_KINDS.get(sub, (None, ["get"]))
        sub_entry: Obj = {
            "name": f"{rt.plural}/{sub}",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": kind or rt.kind,
            "verbs": verbs,
        }
        if sub == "scale":
            sub_entry.update(group="autoscaling", version="v1")
        entries.append(sub_entry)
    return entries


def api_resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for rt in types for entry in _resource_entries(rt)],
    }


def root_paths(registry: Registry) -> Obj:
    paths = {
        "/api",
        "/api/v1",
        "/apis",
        "/version",
        "/healthz",
        "/livez",
        "/readyz",
        "/openapi/v2",
        "/openapi/v3",
    }
    for group, versions in registry.groups().items():
        if group:
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{v}" for v in versions)
    return {"paths": sorted(paths)}


# -- OpenAPI v3 -------------------------------------------------------------------------------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root(registry: Registry) -> Obj:
    paths: Obj = {}
    for group, versions in registry.groups().items():
        for version in versions:
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(registry, group, version)}"}
    return {"paths": paths}


def _hash(registry: Registry, group: str, version: str) -> str:
    """Changes whenever the served types of a group version change (clients cache by it)."""
    text = repr(
        [
            (rt.plural, rt.kind, rt.subresources, rt.printer_columns, rt.schema)
            for rt in registry
            if rt.group == group and rt.version == version
        ]
    )
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:32].upper()


def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "fieldValidation instructs the server on how to handle objects in the request "
    "containing unknown or duplicate fields: Ignore, Warn or Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}


def openapi_v3_group_version(registry: Registry, group: str, version: str) -> Obj | None:
    """An OpenAPI v3 document for one group version.

    Schemas are permissive (`x-kubernetes-preserve-unknown-fields`) except that each
    carries its `x-kubernetes-group-version-kind` so clients can map it; the paths
    advertise `fieldValidation` so that kubectl trusts server-side validation.
    """
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    schemas: Obj = {}
    paths: Obj = {}
    for rt in types:
        name = _schema_name(rt)
        gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
        schema: Obj = dict(rt.schema) if rt.schema else {"type": "object"}
        schema = {**schema, "x-kubernetes-group-version-kind": gvk}
        if not rt.schema:
            schema["x-kubernetes-preserve-unknown-fields"] = True
        schemas[name] = schema
        ref = {"$ref": f"#/components/schemas/{name}"}
        body = {"content": {"application/json": {"schema": ref}}}
        action = {"x-kubernetes-group-version-kind": gvk[0]}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        collection = {
            "post": {
                **action,
                "x-kubernetes-action": "post",
                "operationId": f"create{rt.kind}",
                "requestBody": body,
                "responses": ok,
                "parameters": [_FIELD_VALIDATION],
            },
            "get": {
                **action,
                "x-kubernetes-action": "list",
                "operationId": f"list{rt.kind}",
                "responses": ok,
            },
        }
        item = {
            "get": {**action, "x-kubernetes-action": "get", "operationId": f"read{rt.kind}", "responses": ok},
            "put": {
                **action,
                "x-kubernetes-action": "put",
                "operationId": f"replace{rt.kind}",
                "requestBody": body,
                "responses": ok,
                "parameters": [_FIELD_VALIDATION],
            },
            "patch": {
                **action,
                "x-kubernetes-action": "patch",
                "operationId": f"patch{rt.kind}",
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": ok,
                "parameters": [_FIELD_VALIDATION],
            },
            "delete": {
                **action,
                "x-kubernetes-action": "delete",
                "operationId": f"delete{rt.kind}",
                "responses": ok,
            },
        }
        base = f"/{_gv_path(group, version)}"
        ns = "/namespaces/{namespace}" if rt.namespaced else ""
        paths[f"{base}{ns}/{rt.plural}"] = collection
        paths[f"{base}{ns}/{rt.plural}/{{name}}"] = item
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }
