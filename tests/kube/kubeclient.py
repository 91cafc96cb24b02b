"""A minimal asyncio REST client for the process kubelet.

The kubelet must talk to the API like any other client (so that it sees the emulator
exactly as kopf and kubectl do), but it needs only a handful of calls: get, list,
create, patch, delete and a resumable watch. aiohttp is already a dependency (kopf,
kmock); the `kubernetes` client is synchronous and reads KUBECONFIG at import time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import pathlib
import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import Any, Self

import aiohttp
import yaml

logger = logging.getLogger(__name__)
Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body


def path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


def ssl_context_from_kubeconfig(kubeconfig: pathlib.Path) -> tuple[str, ssl.SSLContext | None]:
    """The server URL and a TLS context (CA, client certificate) of a kubeconfig's current context.

    Certificates may be files or inline `*-data`; inline ones are written to a private
    temporary directory, as `ssl` loads certificate chains only from files.
    """
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config.get("current-context")
    context = next(
        (c["context"] for c in config.get("contexts") or [] if c["name"] == context_name),
        (config.get("contexts") or [{"context": {}}])[0]["context"],
    )
    cluster = next(
        (c["cluster"] for c in config["clusters"] if c["name"] == context.get("cluster")),
        config["clusters"][0]["cluster"],
    )
    user = next(
        (u["user"] for u in config.get("users") or [] if u["name"] == context.get("user")),
        ((config.get("users") or [{"user": {}}])[0]["user"]),
    )
    url = str(cluster["server"])
    if not url.startswith("https://"):
        return url, None
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="kubeclient-"))

    def file_of(entry: dict[str, Any], key: str) -> str | None:
        if entry.get(f"{key}-data"):
            target = scratch / key
            target.write_bytes(base64.b64decode(entry[f"{key}-data"]))
            return str(target)
        value = entry.get(key)
        return str(value) if value else None

    try:
        ctx = ssl.create_default_context(cafile=file_of(cluster, "certificate-authority"))
        cert, key = file_of(user, "client-certificate"), file_of(user, "client-key")
        if cert and key:
            ctx.load_cert_chain(cert, key)
    finally:
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
    return url, ctx


class KubeClient:
    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: pathlib.Path) -> KubeClient:
        return cls(*ssl_context_from_kubeconfig(kubeconfig))

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context is not None else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), connector=connector
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        async with self.session.request(
            method,
            self.url + url,
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as rsp:
            text = await rsp.text()
            payload = json.loads(text) if text and rsp.content_type == "application/json" else text
            if rsp.status >= 400:
                raise ApiError(rsp.status, payload)
            return payload

    async def get(self, url: str) -> Obj | None:
        try:
            result: Obj = await self.request("GET", url)
            return result
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, url: str, **params: str) -> list[Obj]:
        result = await self.request("GET", url, params=params or None)
        return list(result.get("items") or [])

    async def create(self, url: str, body: Obj) -> Obj:
        result: Obj = await self.request("POST", url, body)
        return result

    async def patch(self, url: str, body: Any, *, kind: str = "merge") -> Obj:
        ctype = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[kind]
        result: Obj = await self.request("PATCH", url, body, content_type=ctype)
        return result

    async def delete(self, url: str, body: Obj | None = None) -> Obj | None:
        try:
            result: Obj = await self.request("DELETE", url, body)
            return result
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def watch(self, url: str, **params: str) -> AsyncIterator[tuple[str, Obj]]:
        """Watch for ever, resuming from the last seen resourceVersion after disconnects."""
        since: str | None = None
        while True:
            query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "300", **params}
            if since is not None:
                query["resourceVersion"] = since
            try:
                async with self.session.get(
                    self.url + url, params=query, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
                ) as rsp:
                    if rsp.status >= 400:
                        raise ApiError(rsp.status, await rsp.text())
                    async for line in rsp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            since = None
                            break
                        since = (obj.get("metadata") or {}).get("resourceVersion", since)
                        if event.get("type") != "BOOKMARK":
                            yield event["type"], obj
            except (TimeoutError, aiohttp.ClientError, ApiError) as e:
                logger.debug("watch %s interrupted: %s", url, e)
                await asyncio.sleep(0.2)
