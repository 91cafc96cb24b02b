"""The HTTP face of the emulator: a kmock handler that serves the Kubernetes REST API.

kmock provides the HTTP server (`kmock.Server`), request recording (iterate the handler) and its
DSL for scripted reactions, which tests can still add to inject faults
(`api.handler[kmock.method.PATCH] << 500`). kmock's own Kubernetes emulation is not
used: it mis-parses `/api/v1/namespaces`, lists carry no kind, watches ignore
resourceVersion, and it has no real object semantics. Requests that no user reaction
claims are routed here to the store (`store.py`), discovery (`discovery.py`) and
server-side printing (`tables.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock import KubernetesError

from . import discovery, patching, selectors, tables
from .resources import ResourceType
from .store import DeleteOptions, Event, Obj, Store, api_error

logger = logging.getLogger(__name__)

JSON = "application/json"


def _parse_path(path: str) -> dict[str, Any] | None:
    """Split a REST path into group, version, namespace, plural, name and subresource."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_prefix = bool(rest) and rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return {"group": group, "version": version, "plural": None}
    return {
        "group": group,
        "version": version,
        "namespace": namespace,
        "plural": rest[0],
        "name": rest[1] if len(rest) > 1 else None,
        "subresource": "/".join(rest[2:]) or None,
        "watch": watch_prefix,
    }


def _status(code: int, reason: str, message: str, details: Any = None) -> aiohttp.web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return aiohttp.web.json_response(body, status=code)


def _json(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(data).encode(), status=status, content_type=JSON)


class EmulatorHandler(kmock.RawHandler):
    """A kmock handler whose fallback is a stateful Kubernetes API server."""

    def __init__(self, store: Store | None = None) -> None:
        super().__init__()
        self.store = store or Store()
        self._changed = asyncio.Event()
        self.store.listeners.append(self._notify)
        self.log_dirs: list[str] = []

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # kmock's entry point: parse (our way), record, let user reactions answer first.
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        parsed = _parse_path(raw_request.path) or {}
        request = kmock.Request(
            id=len(self._requests),
            method=raw_request.method,
            url=raw_request.url,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            text=body.decode(errors="replace"),
            data=_loads(body),
            resource=kmock.resource(
                group=parsed.get("group"), version=parsed.get("version"), plural=parsed.get("plural")
            )
            if parsed.get("plural")
            else None,
            namespace=parsed.get("namespace"),
            name=parsed.get("name"),
            subresource=parsed.get("subresource"),
            raw_request=raw_request,
        )
        self._requests.append(request)
        if len(self._requests) > 20_000:  # long benchmarks: keep the recent half of the log
            del self._requests[:10_000]
        try:
            if self._payloads:
                with contextlib.suppress(NotImplementedError):
                    return await kmock.RawHandler._handle(self, request)
            return await self._serve(raw_request, body, parsed)
        except KubernetesError as e:
            return _status(e.status, e.reason or "InternalError", e.message or "", e.details)
        except Exception as e:  # a bug here must reach the client, not kill the connection
            logger.exception("emulator failure on %s %s", raw_request.method, raw_request.path_qs)
            return _status(500, "InternalError", f"emulator failure: {e!r}")

    # -- routing --------------------------------------------------------------------------

    async def _serve(
        self, raw: aiohttp.web.BaseRequest, body: bytes, parsed: Mapping[str, Any]
    ) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        method = raw.method
        registry = self.store.registry
        if method == "GET":
            if path == "/":
                return _json(discovery.root_paths(registry))
            if path == "/version":
                return _json(discovery.SERVER_VERSION)
            if path in ("/healthz", "/livez", "/readyz"):
                return aiohttp.web.Response(text="ok")
            if path == "/api":
                return _json(discovery.api_versions(f"{raw.host}"))
            if path == "/apis":
                return _json(discovery.api_group_list(registry))
            if path == "/openapi/v3":
                return _json(discovery.openapi_v3_root(registry))
            if path.startswith("/openapi/v3/"):
                gv = path[len("/openapi/v3/") :].split("/")
                group, version = (
                    ("", gv[1]) if gv[0] == "api" else (gv[1], gv[2]) if len(gv) >= 3 else ("", "")
                )
                doc = discovery.openapi_v3_group_version(registry, group, version)
                if doc is not None:
                    return _json(doc)
            if path.startswith("/apis/") and path.count("/") == 2:
                doc = discovery.api_group(registry, path.split("/")[2])
                if doc is not None:
                    return _json(doc)
        if not parsed:
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if parsed["plural"] is None:
            if method == "GET":
                doc = discovery.api_resource_list(registry, parsed["group"], parsed["version"])
                if doc is not None:
                    return _json(doc)
            return _status(404, "NotFound", "the server could not find the requested resource")
        rt = registry.get(parsed["group"], parsed["version"], parsed["plural"])
        if rt is None:
            return _status(
                404, "NotFound", f"the server could not find the requested resource ({parsed['plural']})"
            )
        ctype = raw.headers.get("Content-Type", JSON)
        if "protobuf" in ctype:
            return _status(
                415,
                "UnsupportedMediaType",
                "the emulator speaks JSON only; kubectl create <kind> sends protobuf, use a manifest",
            )
        ns, name, sub = parsed["namespace"], parsed["name"], parsed["subresource"]
        params = dict(raw.query)
        strict = params.get("fieldValidation") == "Strict"
        if method == "GET" and (parsed["watch"] or params.get("watch") in ("true", "1", "True")):
            return await self._watch(raw, rt, ns, name, params)
        if name is None:
            if method == "GET":
                return self._list(raw, rt, ns, params)
            if method == "POST":
                return _json(self.store.create(rt, ns, _body(body, ctype), strict=strict), 201)
            if method == "DELETE":
                return self._delete_collection(rt, ns, params, body)
            return _status(405, "MethodNotAllowed", f"{method} is not supported on collections")
        if sub in (None, "status"):
            if method == "GET":
                obj = self.store.get(rt, ns, name)
                return self._table_or_obj(raw, rt, [obj], single=True)
            if method == "PUT":
                new = _body(body, ctype)
                return _json(self.store.update(rt, ns, name, lambda _: new, subresource=sub, strict=strict))
            if method == "PATCH":
                return self._patch(rt, ns, name, sub, ctype, _body(body, ctype), strict)
            if method == "DELETE" and sub is None:
                opts = DeleteOptions.parse(_loads(body), params)
                return _json(self.store.delete(rt, ns, name, opts))
        if rt.key == ("", "pods") and sub == "binding" and method == "POST":
            return self._bind(rt, ns, name, _body(body, ctype))
        if rt.key == ("", "pods") and sub == "eviction" and method == "POST":
            self.store.delete(rt, ns, name)
            return _status(201, "", "evicted")
        if rt.key == ("", "pods") and sub == "log" and method == "GET":
            return self._pod_log(ns, name, params)
        if sub == "scale" and "scale" in rt.subresources:
            return self._scale(rt, ns, name, method, ctype, body)
        return _status(
            405, "MethodNotAllowed", f"{method} on {parsed['plural']}/{sub} is not supported by the emulator"
        )

    # -- reads ----------------------------------------------------------------------------

    def _select(self, rt: ResourceType, ns: str | None, name: str | None, params: Mapping[str, str]) -> Any:
        labels = selectors.parse_label_selector(params.get("labelSelector"))
        fields = selectors.parse_field_selector(params.get("fieldSelector"))

        def check(obj: Obj) -> bool:
            meta = obj["metadata"]
            if rt.namespaced and ns is not None and meta.get("namespace") != ns:
                return False
            if name is not None and meta.get("name") != name:
                return False
            return selectors.labels_match(labels, obj) and fields(obj)

        return check

    def _list(
        self, raw: aiohttp.web.BaseRequest, rt: ResourceType, ns: str | None, params: Mapping[str, str]
    ) -> aiohttp.web.Response:
        check = self._select(rt, ns, None, params)
        items = [obj for obj in self.store.list_objects(rt, ns) if check(obj)]
        return self._table_or_obj(raw, rt, items, single=False)

    def _table_or_obj(
        self, raw: aiohttp.web.BaseRequest, rt: ResourceType, items: list[Obj], *, single: bool
    ) -> aiohttp.web.Response:
        rv = str(self.store.rv)
        if "as=Table" in raw.headers.get("Accept", ""):
            include = raw.query.get("includeObject", "Metadata")
            return _json(tables.render_table(rt, items, rv, include))
        if single:
            return _json(items[0])
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        ns: str | None,
        name: str | None,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        check = self._select(rt, ns, name, params)
        since = params.get("resourceVersion") or ""
        initial = since in ("", "0") or params.get("sendInitialEvents") == "true"
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        response = aiohttp.web.StreamResponse(headers={"Content-Type": JSON})
        await response.prepare(raw)

        as_table = "as=Table" in raw.headers.get("Accept", "")

        async def send(event_type: str, obj: Obj) -> None:
            if as_table and event_type != "BOOKMARK":  # `kubectl get -w`: one-row Tables
                obj = tables.render_table(
                    rt,
                    [obj],
                    obj["metadata"].get("resourceVersion", ""),
                    params.get("includeObject", "Metadata"),
                )
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        try:
            if initial:
                position = self.store.rv
                for obj in self.store.list_objects(rt, ns):
                    if check(obj):
                        await send("ADDED", obj)
                if params.get("sendInitialEvents") == "true" and bookmarks:
                    await send(
                        "BOOKMARK",
                        {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {
                                "resourceVersion": str(position),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    )
            else:
                try:
                    position = int(since)
                except ValueError:
                    position = self.store.rv
            while True:
                changed = self._changed
                for event in self.store.events_since(position):
                    position = event.rv
                    out = _filter_event(rt, event, check, self.store)
                    if out is not None:
                        await send(*out)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(remaining, 5.0))
                if bookmarks and not changed.is_set():
                    await send(
                        "BOOKMARK",
                        {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(position)},
                        },
                    )
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    # -- writes ---------------------------------------------------------------------------

    def _patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        sub: str | None,
        ctype: str,
        patch: Any,
        strict: bool,
    ) -> aiohttp.web.Response:
        is_apply = ctype.startswith("application/apply-patch")
        if is_apply and self.store.find(rt, ns, name) is None:
            if sub is not None:
                raise api_error(404, "NotFound", f'{rt.plural} "{name}" not found')
            patch = dict(patch)
            patch.setdefault("metadata", {})["name"] = name
            return _json(self.store.create(rt, ns, patch, strict=strict), 201)

        def mutate(obj: Obj) -> Any:
            return patching.apply_patch(ctype, obj, patch, builtin=rt.builtin)

        return _json(self.store.update(rt, ns, name, mutate, subresource=sub, strict=strict))

    def _delete_collection(
        self, rt: ResourceType, ns: str | None, params: Mapping[str, str], body: bytes
    ) -> aiohttp.web.Response:
        check = self._select(rt, ns, None, params)
        opts = DeleteOptions.parse(_loads(body), dict(params))
        deleted = []
        for obj in self.store.list_objects(rt, ns):
            if check(obj) and self.store.find(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"]):
                deleted.append(
                    self.store.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], opts)
                )
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": deleted,
            }
        )

    def _bind(self, rt: ResourceType, ns: str | None, name: str, binding: Any) -> aiohttp.web.Response:
        node = ((binding or {}).get("target") or {}).get("name")
        if not node:
            raise api_error(422, "Invalid", "a binding needs target.name")

        def mutate(pod: Obj) -> Obj:
            if pod["spec"].get("nodeName"):
                raise api_error(
                    409, "Conflict", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"'
                )
            pod["spec"]["nodeName"] = node
            return pod

        self.store.update(rt, ns, name, mutate)
        return _status(201, "", "bound")

    def _scale(
        self, rt: ResourceType, ns: str | None, name: str, method: str, ctype: str, body: bytes
    ) -> aiohttp.web.Response:
        def as_scale(obj: Obj) -> Obj:
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    k: obj["metadata"][k]
                    for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                    if k in obj["metadata"]
                },
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)},
            }

        if method == "GET":
            return _json(as_scale(self.store.get(rt, ns, name)))
        payload = _body(body, ctype)

        def mutate(obj: Obj) -> Obj:
            scale = as_scale(obj)
            new = payload if method == "PUT" else patching.apply_patch(ctype, scale, payload, builtin=True)
            obj.setdefault("spec", {})["replicas"] = (new.get("spec") or {}).get("replicas", 0)
            return obj

        return _json(as_scale(self.store.update(rt, ns, name, mutate)))

    def _pod_log(self, ns: str | None, name: str, params: Mapping[str, str]) -> aiohttp.web.Response:
        """`kubectl logs`: read the file the process kubelet writes, found via the node's annotation."""
        pods_rt, nodes_rt = (
            self.store.registry.get("", "v1", "pods"),
            self.store.registry.get("", "v1", "nodes"),
        )
        assert pods_rt is not None and nodes_rt is not None
        pod = self.store.get(pods_rt, ns, name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = params.get("container") or (containers[0] if containers else "")
        node = self.store.find(nodes_rt, None, pod["spec"].get("nodeName") or "")
        log_dir = ((node or {}).get("metadata", {}).get("annotations") or {}).get("kubevine.test/log-dir")
        if not log_dir:
            raise api_error(400, "BadRequest", f"pod {name} has no logs: it runs on no process kubelet")
        import pathlib

        path = pathlib.Path(log_dir) / f"{ns}_{name}_{container}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        if params.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(params["tailLines"]) :])
        return aiohttp.web.Response(text=text)


def _filter_event(rt: ResourceType, event: Event, check: Any, store: Store) -> tuple[str, Obj] | None:
    """What a (possibly selector-filtered) watch shows for one change, as Kubernetes does."""
    if event.key != rt.key:
        return None
    obj = store.view(rt, event.obj)
    now_ok = check(obj)
    was_ok = event.old is not None and check(store.view(rt, event.old))
    if event.type == "ADDED":
        return ("ADDED", obj) if now_ok else None
    if event.type == "DELETED":
        return ("DELETED", obj) if (now_ok or was_ok) else None
    if now_ok and was_ok:
        return ("MODIFIED", obj)
    if now_ok:
        return ("ADDED", obj)
    if was_ok:
        return ("DELETED", obj)
    return None


def _loads(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _body(body: bytes, ctype: str) -> Any:
    if ctype.startswith(("application/apply-patch+yaml", "application/yaml")):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as e:
            raise api_error(400, "BadRequest", f"invalid YAML: {e}") from e
    try:
        return json.loads(body) if body else None
    except ValueError as e:
        raise api_error(400, "BadRequest", f"invalid JSON body: {e}") from e
