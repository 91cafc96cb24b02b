"""Running the emulator: in a background thread of the test process, or as its own process.

kubectl and kopf run as subprocesses and test bodies are mostly synchronous, so the
emulator cannot share the test's event loop: it gets a thread with its own loop (the
`kube_api` fixture) or a process of its own (`python -m tests.kube.emulator`). Either
way it listens on 127.0.0.1 on a free port and writes a kubeconfig that points there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import kmock
import yaml

from .server import EmulatorHandler
from .store import Store

T = TypeVar("T")


def write_kubeconfig(path: pathlib.Path, url: str, namespace: str = "default") -> pathlib.Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@dataclasses.dataclass
class KubeAPI:
    """A running emulator as tests see it.

    `url` and `kubeconfig` for clients; `env` for subprocesses (kubectl, kopf, the kubelet)
    with KUBECONFIG and a private kubectl cache dir; `call(fn)` runs `fn(store)` on the
    emulator's loop (the only safe way to read or change the store from a test).
    """

    url: str
    kubeconfig: pathlib.Path
    env: dict[str, str]
    handler: EmulatorHandler | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def store(self) -> Store:
        assert self.handler is not None, "the store is reachable only for an in-process emulator"
        return self.handler.store

    def call(self, fn: Callable[[Store], T], timeout: float = 10.0) -> T:
        assert self._loop is not None, "call() needs an in-process emulator"

        async def run() -> T:
            return fn(self.store)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this emulator (never reads KUBECONFIG)."""
        import kubernetes.client

        config = kubernetes.client.Configuration()
        config.host = self.url
        return kubernetes.client.ApiClient(config)


def client_env(kubeconfig: pathlib.Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["KUBECONFIG"] = str(kubeconfig)
    env["KUBECACHEDIR"] = str(kubeconfig.parent / "kubectl-cache")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.pop("KUBERNETES_SERVICE_PORT", None)
    return env


async def serve(
    port: int = 0,
    *,
    started: Callable[[EmulatorHandler, kmock.Server], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever)."""
    handler = EmulatorHandler()
    async with handler, kmock.Server(handler, port=port or None, user_agent=""):
        server = handler.servers[0]
        if started is not None:
            started(handler, server)
        await (stop or asyncio.Event()).wait()


class EmulatorThread:
    """The emulator in a daemon thread with its own event loop (for the pytest fixture)."""

    def __init__(self, workdir: pathlib.Path, port: int = 0) -> None:
        self.workdir = workdir
        self.port = port
        self._ready: concurrent.futures.Future[KubeAPI] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kube-api-emulator", daemon=True)

    def start(self, timeout: float = 10.0) -> KubeAPI:
        self._thread.start()
        return self._ready.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def started(handler: EmulatorHandler, server: kmock.Server) -> None:
            url = f"http://127.0.0.1:{server.port}"
            kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", url)
            self._ready.set_result(
                KubeAPI(
                    url=url,
                    kubeconfig=kubeconfig,
                    env=client_env(kubeconfig),
                    handler=handler,
                    _loop=self._loop,
                )
            )

        try:
            await serve(self.port, started=started, stop=self._stop)
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)
            raise
