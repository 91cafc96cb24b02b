"""The one part of the kubelet's HTTPS API the process kubelet serves: container logs.

`kubectl logs` asks the API server, which asks the kubelet of the pod's node at
`https://<InternalIP>:10250/containerLogs/<ns>/<pod>/<container>`. This serves that path
from the process kubelet's log files, over TLS with the node's serving certificate, to one
client only: the API server's kubelet-client certificate (a real kubelet would ask the API
server with a SubjectAccessReview; here nobody else has a reason to call). Supported
query parameters: `tailLines`, `limitBytes`, `follow`. exec, attach and port-forward are not
served (a process has no container runtime to stream from).
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
import ssl
from collections.abc import Callable

from aiohttp import web

#: The user the API server's kubelet client certificate names (tests/realkube/controlplane.py).
API_SERVER_USER = "kube-apiserver-kubelet-client"


def server_context(cert: pathlib.Path, key: pathlib.Path, client_ca: pathlib.Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _peer_user(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        kept = collections.deque(data.splitlines(keepends=True), maxlen=max(lines, 0))
        data = b"".join(kept)
    if limit is not None:
        data = data[:limit]
    return data


def make_app(
    log_path: Callable[[str, str, str], pathlib.Path], pod_running: Callable[[str, str], bool]
) -> web.Application:
    """`log_path(ns, pod, container)` names a log file; `pod_running(ns, pod)` ends a follow."""

    async def container_logs(request: web.Request) -> web.StreamResponse:
        if _peer_user(request) != API_SERVER_USER:
            raise web.HTTPForbidden(text="only the API server may read logs here\n")
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        path = log_path(ns, pod, container)
        if not path.exists():
            raise web.HTTPNotFound(text=f"no log for container {container!r} of pod {ns}/{pod}\n")
        query = request.query
        lines = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        follow = query.get("follow", "false").lower() in ("true", "1")
        data = _tail(path.read_bytes(), lines, limit)
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        offset = path.stat().st_size
        while pod_running(ns, pod):
            await asyncio.sleep(0.2)  # polling a file: there is nothing to wait on
            size = path.stat().st_size if path.exists() else offset
            if size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    await response.write(f.read(size - offset))
                offset = size
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


async def serve(app: web.Application, host: str, port: int, ctx: ssl.SSLContext) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    return runner
