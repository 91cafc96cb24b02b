"""TaskVine's ``Factory``: start and stop workers for a manager, between a minimum and a maximum.

``Factory("local", manager=m)`` runs ``kubevine worker`` processes on this machine;
``Factory("kubernetes", manager_name="wf")`` sets the worker pool bounds of the VineWorkflow
``wf`` (its operator then scales the pods, node caches and all). Options are attributes named
after TaskVine's (``min_workers``, ``max_workers``, ``cores``, ``memory``, ``disk``, ``gpus``,
``timeout``...); use it as a context manager, or ``start()``/``stop()``.

The local factory looks at the manager's demand once a second: it keeps ``min_workers``
running and adds workers (up to ``max_workers``) while tasks wait for room; workers idle
longer than ``timeout`` leave by themselves (``--idle-timeout``), never while they run tasks.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kubevine import auth

if TYPE_CHECKING:
    from kubevine.client import Manager

log = logging.getLogger(__name__)

#: TaskVine's factory options with a meaning here (the others are accepted and not used)
USED = ("min_workers", "max_workers", "cores", "memory", "disk", "gpus", "timeout", "scratch_dir")
DEFAULTS: dict[str, Any] = {"min_workers": 0, "max_workers": 100, "cores": 1, "memory": 4096, "disk": 16384}


class Factory:
    """Workers for a manager, as TaskVine's ``vine_factory`` provides them."""

    def __init__(
        self,
        batch_type: str = "local",
        manager: Manager | None = None,
        manager_host_port: str | None = None,
        manager_name: str | None = None,
        factory_binary: str | None = None,
        worker_binary: str | None = None,
        log_file: str = os.devnull,
    ) -> None:
        if batch_type not in ("local", "kubernetes", "k8s"):
            raise ValueError(f"batch type {batch_type!r}: kubevine's factories are 'local' and 'kubernetes'")
        if manager is None and manager_host_port is None and manager_name is None:
            raise ValueError("a Factory needs manager=, manager_host_port= or manager_name=")
        object.__setattr__(self, "_opts", dict(DEFAULTS))
        self.batch_type = "kubernetes" if batch_type == "k8s" else batch_type
        self.manager = manager
        self.manager_host_port = manager_host_port or (manager.address if manager is not None else None)
        self.manager_name = manager_name
        self.log_file = log_file
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scratch: Path | None = None

    # TaskVine sets options as attributes: f.max_workers = 4
    def __setattr__(self, name: str, value: Any) -> None:
        if name in USED or name in _INERT:
            self._opts[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        opts = self.__dict__.get("_opts", {})
        if name in opts:
            return opts[name]
        raise AttributeError(f"Factory has no option {name!r}" if name in _INERT else name)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Factory:
        for name in set(self._opts) - set(USED):
            log.info("factory option %s has no effect in kubevine", name)
        if self.batch_type == "kubernetes":
            self._scale_workflow(int(self._opts["min_workers"]), int(self._opts["max_workers"]))
            return self
        if self.manager_host_port is None:
            raise ValueError("a local factory needs manager= or manager_host_port=")
        self._scratch = Path(self._opts.get("scratch_dir") or tempfile.mkdtemp(prefix="kubevine-factory-"))
        self._thread = threading.Thread(target=self._loop, name="kubevine-factory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for p in self._procs:
            if p.poll() is None:
                p.terminate()  # a worker drains on SIGTERM: finishes what it runs, then leaves
        for p in self._procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> Factory:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ local workers

    def _token(self) -> str:
        if self.manager is not None:
            return self.manager._conn.credentials.token
        host, _, port = (self.manager_host_port or "").rpartition(":")
        tok = auth.load_token() or auth.published_token(host, int(port))
        if tok is None:
            raise auth.TokenError("the factory needs the workflow token: $KUBEVINE_TOKEN")
        return tok

    def wanted(self, running: int, waiting_cores: float) -> int:
        """How many workers to have: at least the minimum, more while tasks wait for cores."""
        lo, hi = int(self._opts["min_workers"]), int(self._opts["max_workers"])
        extra = math.ceil(waiting_cores / max(float(self._opts["cores"]), 1e-9)) if waiting_cores else 0
        return max(lo, min(hi, running + extra))

    def _loop(self) -> None:
        from kubevine.admin import Admin, AdminError

        token = self._token()
        encrypt = self.manager._conn.credentials.encrypt if self.manager is not None else None
        admin = Admin(self.manager_host_port or "", token, encrypt=encrypt)
        while not self._stop.is_set():
            self._procs = [p for p in self._procs if p.poll() is None]
            try:
                waiting = admin.status().waiting.cores
            except AdminError as e:
                log.warning("factory: %s", e)
                waiting = 0.0
            for _ in range(self.wanted(len(self._procs), waiting) - len(self._procs)):
                self._procs.append(self._start_worker(token))
            self._stop.wait(1.0)

    def _start_worker(self, token: str) -> subprocess.Popen[bytes]:
        assert self._scratch is not None and self.manager_host_port is not None
        o = self._opts
        host, _, port = self.manager_host_port.rpartition(":")
        args = [sys.executable, "-m", "kubevine", "worker", host, port]
        args += ["--cores", str(o["cores"]), "--memory", str(o["memory"]), "--disk", str(o["disk"])]
        args += [
            "--gpus",
            str(o.get("gpus", 0) or 0),
            "--workdir",
            str(self._scratch / f"w{len(self._procs)}"),
        ]
        if o.get("timeout"):
            args += ["--idle-timeout", str(o["timeout"])]
        if self.manager is not None and self.manager._conn.credentials.encrypt:
            args.append("--encrypt")
        with open(self.log_file, "ab") as out:
            return subprocess.Popen(
                args, env={**os.environ, auth.ENV: token}, stdout=out, stderr=subprocess.STDOUT
            )

    # ------------------------------------------------------------------ Kubernetes

    def _scale_workflow(self, low: int, high: int) -> None:
        """Set the pool bounds of the VineWorkflow named ``manager_name`` (in $POD_NAMESPACE or
        the kubeconfig's namespace); its operator starts and stops the pods."""
        import kubernetes

        name = self.manager_name or (self.manager.name if self.manager is not None else None)
        if not name:
            raise ValueError("a kubernetes factory needs manager_name= (the VineWorkflow's name)")
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            namespace = os.environ.get("POD_NAMESPACE", "default")
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
            _, current = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
            namespace = current["context"].get("namespace", "default")
        patch = {"spec": {"workers": {"min": low, "max": high}}}
        kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object(
            "kubevine.io", "v1alpha1", namespace, "vineworkflows", name, patch
        )
        log.info("VineWorkflow %s/%s: workers between %d and %d", namespace, name, low, high)


_INERT = frozenset(
    {
        "amazon_config", "autosize", "batch_options", "capacity", "catalog", "condor_requirements",
        "config_file", "debug", "debug_file", "debug_file_size", "env", "extra_options",
        "factory_timeout", "foremen_name", "k8s_image", "k8s_worker_image", "mesos_master",
        "mesos_path", "mesos_preload", "password", "python_env", "python_package",
        "run_factory_as_manager", "runos", "ssl", "tasks_per_worker", "worker_binary",
        "workers_per_cycle", "wrapper", "wrapper_input",
    }
)  # fmt: skip
