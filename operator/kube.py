"""The operator's few calls to the Kubernetes API, as plain JSON in and out.

Exists so that handlers never touch an HTTP client: they ask `KubeApi` to create, get,
list, patch or delete an object given as a manifest dict (exactly what the pure
`build_*()` functions return), and get dicts back. kopf talks to the API for its own
bookkeeping (watching, status patches, events); everything the operator does to a
workflow's children goes through here.

Built on the `kubernetes` package's generic `ApiClient` (its configuration loaders handle
in-cluster service-account tokens, including their rotation, and kubeconfig files), with
typed API classes avoided on purpose: manifests stay dicts end to end, so no field the
builders set is dropped by a model class that does not know it. The client is
synchronous; each call runs in a worker thread (`asyncio.to_thread`) so the operator's
event loop never blocks, and each has a timeout.

API errors are wrapped at this boundary into `KubeError` (`raise ... from e`) carrying
the HTTP status, so callers branch on `.status` (404, 409) and never import the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
from urllib3.exceptions import HTTPError

log = logging.getLogger(__name__)

Obj = dict[str, Any]

#: kind -> (apiVersion, plural) for everything the operator reads or writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "Pod": ("v1", "pods"),
    "Service": ("v1", "services"),
    "Secret": ("v1", "secrets"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "Job": ("batch/v1", "jobs"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "VineWorkflow": ("kubevine.io/v1alpha1", "vineworkflows"),
}

#: Seconds any one API call may take.
REQUEST_TIMEOUT = 10.0


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no answer), `causes` the
    reasons of the Status's `details.causes`."""

    def __init__(self, status: int, message: str, causes: tuple[str, ...] = ()) -> None:
        self.status = status
        self.causes = causes
        super().__init__(message)

    @property
    def namespace_terminating(self) -> bool:
        """A create refused because its namespace is being deleted (NamespaceLifecycle's 403
        with the cause `NamespaceTerminating`): nothing can be made there any more."""
        return self.status == 403 and "NamespaceTerminating" in self.causes


def collection_path(kind: str, namespace: str) -> str:
    """`/api/v1/namespaces/<ns>/pods`, `/apis/apps/v1/namespaces/<ns>/deployments`, ..."""
    api_version, plural = RESOURCES[kind]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}"


def load_api_client() -> Any:
    """An `ApiClient` for the cluster the operator runs in, else the current kubeconfig."""
    configuration = kubernetes.client.Configuration()
    loaders: Any = kubernetes.config  # untyped package
    try:
        loaders.load_incluster_config(client_configuration=configuration)
    except loaders.ConfigException:
        loaders.load_kube_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


class KubeApi:
    """Create/get/list/patch/delete objects of the kinds in `RESOURCES`, as dicts."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    # -- the one HTTP call ---------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            method_, url, headers_, body_, post = self._client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method_, url, headers_, body_, post, _request_timeout=REQUEST_TIMEOUT
            )
            response.read()
        except (HTTPError, OSError) as e:
            raise KubeError(0, f"{method} {path}: no answer from the API server: {e}") from e
        data = json.loads(response.data) if response.data else {}
        if not 200 <= response.status < 300:
            message = data.get("message") if isinstance(data, dict) else None
            details = (data.get("details") if isinstance(data, dict) else None) or {}
            causes = tuple(
                str(c.get("reason", "")) for c in details.get("causes") or [] if isinstance(c, dict)
            )
            raise KubeError(
                response.status, f"{method} {path}: {response.status} {message or ''}".strip(), causes
            )
        return data if isinstance(data, dict) else {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Obj:
        return await asyncio.to_thread(self._request, method, path, **kwargs)

    def get_path(self, path: str) -> Obj:
        """GET any path (e.g. `/openapi/v3`), synchronously: for checks before the operator runs."""
        return self._request("GET", path)

    # -- verbs ---------------------------------------------------------------------------

    async def create(self, manifest: Mapping[str, Any]) -> Obj:
        """POST `manifest` into its namespace; `KubeError(409)` when it exists."""
        meta = manifest["metadata"]
        return await self._call("POST", collection_path(manifest["kind"], meta["namespace"]), body=manifest)

    async def create_if_missing(self, manifest: Mapping[str, Any]) -> tuple[Obj, bool]:
        """Create `manifest` unless an object of that name exists: (the created object, True),
        or ({}, False) when it existed. The existing object is not read: the operator watches
        what it creates, and its RBAC grants no `get` on those kinds."""
        try:
            return await self.create(manifest), True
        except KubeError as e:
            if e.status != 409:
                raise
        return {}, False

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when there is none."""
        try:
            return await self._call("GET", f"{collection_path(kind, namespace)}/{name}")
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str, label_selector: str) -> list[Obj]:
        """Objects of `kind` in `namespace` matching `label_selector`."""
        data = await self._call(
            "GET", collection_path(kind, namespace), query={"labelSelector": label_selector}
        )
        return list(data.get("items") or [])

    async def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        """A JSON merge patch (RFC 7386) of the object."""
        return await self._call(
            "PATCH",
            f"{collection_path(kind, namespace)}/{name}",
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete the object (only if it still has `uid`); False when it was already gone."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        try:
            await self._call("DELETE", f"{collection_path(kind, namespace)}/{name}", body=options)
        except KubeError as e:
            if e.status in (404, 409):  # gone, or replaced by a new object of that name
                return False
            raise
        return True
