"""The process kubelet: runs the emulator's pods as local processes.

No container runtime exists where kubevine is tested, yet its end-to-end tests need
the pods the operator creates to really run: a manager, a Redis, workers sharing a
node cache. This component plays the kube-scheduler, the controllers of Deployments,
StatefulSets and Jobs (see controllers.py) and the kubelets of a set of Nodes: it
binds pods to nodes, gives each pod its own loopback IP (127.0.0.2, 127.0.0.3, ...),
starts each container as a process (see podspec.py for the image, env, volume and
Service-DNS rules), runs probes for real against the pod IP, honours restart policies,
runs preStop hooks and the SIGTERM → grace period → SIGKILL sequence on deletion, and
writes pod, workload and node status back through the API like any client.

In tests: the `kubelet` fixture (tests/kube/conftest.py). By hand:
`python -m tests.kube.kubelet --kubeconfig FILE --root DIR --nodes node-a,node-b`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp
import yaml

from . import controllers, podspec, podstate
from .kubeclient import ApiError, KubeClient, path
from .podstate import ContainerRun, PodRun, Probe, _now

logger = logging.getLogger(__name__)
Obj = dict[str, Any]

_ip_lock = threading.Lock()
_ip_counter = itertools.count(2)


def allocate_pod_ip() -> str:
    """The next free loopback address (127.0.0.2 first); all of 127/8 routes to lo on Linux."""
    with _ip_lock:
        n = next(_ip_counter)
    return (
        f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" if n & 255 not in (0, 255) else allocate_pod_ip()
    )


class Kubelet:
    """One process kubelet serving several Nodes of one emulated cluster."""

    def __init__(
        self,
        api_url: str,
        root: pathlib.Path,
        nodes: list[str | Mapping[str, Any]] | tuple[str, ...] = ("node-a", "node-b"),
        *,
        kubeconfig: pathlib.Path | None = None,
        dns_wait: float = 60.0,
        probe_period_cap: float = 1.0,
        resync: float = 1.0,
    ) -> None:
        self.api_url = api_url
        self.root = pathlib.Path(root)
        self.nodes: dict[str, Obj] = {}
        for node in nodes:
            spec = {"name": node} if isinstance(node, str) else dict(node)
            self.nodes[str(spec["name"])] = spec
        self.kubeconfig = kubeconfig
        self.dns_wait = dns_wait
        self.probe_period_cap = probe_period_cap
        self.resync = resync
        self.runs: dict[str, PodRun] = {}
        self._wake = asyncio.Event()
        self._rr = itertools.count()
        self._executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="kubelet-exec")
        self._client: KubeClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.root / "logs"

    def log_path(self, namespace: str, pod: str, container: str) -> pathlib.Path:
        return self.logs_dir / f"{namespace}_{pod}_{container}.log"

    def node_dir(self, node: str) -> pathlib.Path:
        return self.root / "nodes" / node

    @property
    def client(self) -> KubeClient:
        assert self._client is not None
        return self._client

    # -- main loop ------------------------------------------------------------------------

    # Hooks: the real-cluster kubelet (realkubelet.py) overrides these; the defaults are the
    # emulator tier's behaviour.

    def _make_client(self) -> KubeClient:
        return KubeClient(self.api_url)

    def _watch_urls(self) -> tuple[str, ...]:
        return (
            "/api/v1/pods",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1/statefulsets",
            "/apis/batch/v1/jobs",
            "/api/v1/services",
            "/api/v1/secrets",
            "/api/v1/configmaps",
        )

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        """Coroutines that run beside the main loop (node heartbeats in a real cluster)."""
        return []

    def _allocate_ip(self, node: str) -> str:
        return allocate_pod_ip()

    def _host_ip(self, node: str) -> str:
        return "127.0.0.1"

    async def _forget(self, run: PodRun) -> None:
        """A pod's processes are gone and it is no longer tracked: release what it held."""

    def _base_env(self, run: PodRun) -> dict[str, str]:
        """Variables every container gets before its own env."""
        base = {
            "PATH": f"{podspec.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(run.pod_dir / "home"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": run.name,
            "PYTHONUNBUFFERED": "1",
        }
        if self.kubeconfig is not None:
            base["KUBECONFIG"] = str(self.kubeconfig)
        return base

    def _launch_argv(self, run: PodRun, c: ContainerRun) -> list[str]:
        """The argv actually executed for a container start (a wrapper may precede it)."""
        return c.argv

    def _exited(self, run: PodRun, c: ContainerRun, returncode: int) -> None:
        c.exit_code = returncode
        c.reason = "Completed" if c.exit_code == 0 else "Error"

    def _event(self, run: PodRun, type_: str, reason: str, message: str) -> None:
        """Post an Event about the pod (the real-cluster kubelet does; the emulator tier does not)."""

    def _volumes_ready(self, pod: Obj, run: PodRun, volumes: Mapping[str, pathlib.Path]) -> None:
        """The pod's volumes exist locally (the real-cluster kubelet sets their owners here)."""

    def _bind_all(self, argv: list[str], run: PodRun) -> list[str]:
        """Pods here share the host's network: an argument that binds every address
        (`0.0.0.0`, what the manager and Redis are given) binds the pod's own IP instead, so
        two pods can use one port. (The real-cluster kubelet gives each pod its own network
        namespace and keeps the argument.)"""
        return [run.ip if a == "0.0.0.0" else a for a in argv]

    def _exec_prefix(self, run: PodRun, c: ContainerRun) -> list[str]:
        """What precedes an exec probe's or hook's command (entering the pod's network)."""
        return []

    def _not_runnable(self, run: PodRun, e: podspec.NotRunnable) -> None:
        run.failed_reason, run.failed_message = e.reason, e.message
        logger.warning("pod %s/%s cannot run: %s", run.namespace, run.name, e.message)

    status_patch = "merge"

    # -- main loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        async with self._make_client() as client:
            self._client = client
            await self._register_nodes()
            watches = [asyncio.create_task(self._watch(url)) for url in self._watch_urls()]
            watches += [asyncio.create_task(coro) for coro in self._background()]
            last_sync = 0.0
            try:
                while not stop.is_set():
                    dirty = self._check_processes()
                    if dirty or self._wake.is_set() or time.monotonic() - last_sync > self.resync:
                        self._wake.clear()
                        last_sync = time.monotonic()
                        try:
                            await self._reconcile()
                        except (TimeoutError, ApiError, aiohttp.ClientError) as e:
                            logger.warning("kubelet reconcile failed: %s", e)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            finally:
                for task in watches:
                    task.cancel()
                await asyncio.gather(*watches, return_exceptions=True)
                await self._shutdown()
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def _watch(self, url: str) -> None:
        async for _ in self.client.watch(url):
            self._wake.set()

    async def _register_nodes(self) -> None:
        for name, spec in self.nodes.items():
            self.node_dir(name).mkdir(parents=True, exist_ok=True)
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(spec.get("labels") or {}),
            }
            capacity = {
                "cpu": "8",
                "memory": "32Gi",
                "pods": "110",
                "ephemeral-storage": "100Gi",
                **(spec.get("capacity") or {}),
            }
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {
                        "kubevine.test/log-dir": str(self.logs_dir),
                        "kubevine.test/node-dir": str(self.node_dir(name)),
                    },
                },
                "spec": {"taints": spec.get("taints") or []},
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": name},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "process kubelet is posting ready status",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "v1.32.0-process-kubelet",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "process://local",
                    },
                },
            }
            if await self.client.get(path("v1", "nodes", name=name)) is None:
                await self.client.create("/api/v1/nodes", node)
            await self.client.patch(path("v1", "nodes", name=name, sub="status"), {"status": node["status"]})

    async def _reconcile(self) -> None:
        pods = await self.client.list("/api/v1/pods")
        for url, fn in (
            ("/apis/apps/v1/deployments", controllers.reconcile_deployment),
            ("/apis/apps/v1/statefulsets", controllers.reconcile_statefulset),
            ("/apis/batch/v1/jobs", controllers.reconcile_job),
        ):
            for owner in await self.client.list(url):
                if owner["metadata"].get("deletionTimestamp"):
                    continue
                await self._act(owner, fn(owner, pods))
        for pod in pods:
            if not pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp"):
                await self._schedule(pod)
        await self._sync_pods(pods)

    async def _sync_pods(self, pods: list[Obj]) -> None:
        """Run the pods bound to our nodes; stop processes of pods that vanished."""
        seen = set()
        for pod in pods:
            if pod["spec"].get("nodeName") in self.nodes:
                seen.add(pod["metadata"]["uid"])
                try:
                    await self._sync_pod(pod)
                except ApiError as e:
                    if e.status not in (404, 409):  # one pod's trouble never holds up the others
                        meta = pod["metadata"]
                        logger.warning("pod %s/%s: sync failed: %s", meta["namespace"], meta["name"], e)
        for uid in list(self.runs):
            if uid not in seen:  # removed behind our back (force deletion): stop its processes
                run = self.runs.pop(uid)
                await self._kill(run, grace=0)
                await self._forget(run)

    async def _act(self, owner: Obj, actions: controllers.Actions) -> None:
        meta = owner["metadata"]
        ns = meta["namespace"]
        for pod in actions.create:
            try:
                await self.client.create(path("v1", "pods", ns), pod)
            except ApiError as e:
                if e.status != 409:
                    raise
        for name in actions.delete:
            await self.client.delete(path("v1", "pods", ns, name))
        if actions.status is not None:
            api_version, plural = owner["apiVersion"], owner["kind"].lower() + "s"
            with contextlib.suppress(ApiError):
                await self.client.patch(
                    path(api_version, plural, ns, meta["name"], "status"), {"status": actions.status}
                )

    async def _schedule(self, pod: Obj) -> None:
        spec = pod["spec"]
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        selector = spec.get("nodeSelector") or {}
        candidates = [
            name
            for name, node in self.nodes.items()
            if all(
                {"kubernetes.io/hostname": name, **(node.get("labels") or {})}.get(k) == v
                for k, v in selector.items()
            )
        ]
        if not candidates:
            return
        node = candidates[next(self._rr) % len(candidates)]
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        with contextlib.suppress(ApiError):
            await self.client.create(path("v1", "pods", meta["namespace"], meta["name"], "binding"), binding)

    # -- one pod --------------------------------------------------------------------------

    async def _sync_pod(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        run = self.runs.get(uid)
        if meta.get("deletionTimestamp"):
            idle = run is None or not any(c.running for c in run.all_containers())
            if idle and (run is None or run.terminating is None or run.terminating.done()):
                if self.runs.pop(uid, None) is not None and run is not None:
                    await self._forget(run)
                await self.client.delete(
                    path("v1", "pods", meta["namespace"], meta["name"]),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                )
                return
            if run is not None and run.terminating is None:
                grace = int(
                    meta.get("deletionGracePeriodSeconds") or spec.get("terminationGracePeriodSeconds", 30)
                )
                run.terminating = asyncio.create_task(self._kill(run, grace=grace))
            return
        if run is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return
            pod_dir = self.root / "pods" / f"{meta['namespace']}_{meta['name']}_{uid[:8]}"
            run = PodRun(
                uid=uid,
                namespace=meta["namespace"],
                name=meta["name"],
                ip=self._allocate_ip(spec["nodeName"]),
                node=spec["nodeName"],
                pod_dir=pod_dir,
                restart_policy=spec.get("restartPolicy", "Always"),
            )
            run.init_containers = [ContainerRun(c, init=True) for c in spec.get("initContainers") or []]
            run.containers = [ContainerRun(c) for c in spec.get("containers") or []]
            self.runs[uid] = run
            # The IP is published first: fieldRef status.podIP must see it.
            await self._write_status(pod, run)
            host_ip = self._host_ip(run.node)
            pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": run.ip, "hostIP": host_ip}}
        if not run.prepared and run.failed_reason is None and run.terminating is None:
            await self._prepare(pod, run)
        self._advance(run)
        await self._write_status(pod, run)

    async def _lookup_all(
        self, pod: Obj, own_ip: str
    ) -> tuple[dict[tuple[str, str], Obj], list[podspec.ServiceTarget]]:
        """Secrets and ConfigMaps of the pod's namespace; Services with a Ready pod's IP.

        A Service that selects the pod being started resolves to that pod's own IP
        when none is Ready (a pod naming its own Service must not wait for itself).
        """
        namespace = pod["metadata"]["namespace"]
        own_labels = pod["metadata"].get("labels") or {}
        objs: dict[tuple[str, str], Obj] = {}
        for kind, plural in (("secret", "secrets"), ("configmap", "configmaps")):
            for obj in await self.client.list(path("v1", plural, namespace)):
                objs[(kind, obj["metadata"]["name"])] = obj
        services = []
        pods = await self.client.list("/api/v1/pods")
        for svc in await self.client.list("/api/v1/services"):
            sel = (svc.get("spec") or {}).get("selector") or {}
            ready = [
                p
                for p in pods
                if p["metadata"].get("namespace") == svc["metadata"]["namespace"]
                and sel
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
                and controllers.is_ready(p)
                and (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")
            ]
            ports = {}
            for port in (svc.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str) and ready:
                    target = next(
                        (
                            cp.get("containerPort")
                            for c in ready[0]["spec"].get("containers") or []
                            for cp in c.get("ports") or []
                            if cp.get("name") == target
                        ),
                        port.get("port"),
                    )
                ports[int(port["port"])] = int(target)
            selects_self = (
                bool(sel)
                and svc["metadata"]["namespace"] == namespace
                and all(own_labels.get(k) == v for k, v in sel.items())
            )
            ip = ready[0]["status"]["podIP"] if ready else own_ip if selects_self else None
            services.append(
                podspec.ServiceTarget(svc["metadata"]["namespace"], svc["metadata"]["name"], ports, ip)
            )
        return objs, services

    async def _prepare(self, pod: Obj, run: PodRun) -> None:
        """Compute each container's argv, env and mounts; leave the pod waiting if it must."""
        objs, services = await self._lookup_all(pod, run.ip)

        def lookup(kind: str, name: str) -> Obj | None:
            return objs.get((kind, name))

        deadline_passed = time.monotonic() - run.waiting_since > self.dns_wait
        try:
            volumes = podspec.prepare_volumes(pod, self.root, run.pod_dir, lookup)
            self._volumes_ready(pod, run, volumes)
            for c in run.all_containers():
                self._prepare_container(
                    pod, run, c, volumes, lookup, services, strict_dns=not deadline_passed
                )
        except podspec.NotRunnable as e:
            self._not_runnable(run, e)
            return
        except podspec.MissingReference as e:
            run.waiting_reason, run.waiting_message = "CreateContainerConfigError", str(e)
            return
        except podspec.MountFailed as e:
            run.waiting_reason, run.waiting_message = "ContainerCreating", str(e)
            self._event(run, "Warning", "FailedMount", str(e))
            return
        except podspec.UnresolvedService as e:
            run.waiting_reason, run.waiting_message = "ContainerCreating", f"waiting for service DNS: {e}"
            return
        run.prepared = True

    def _prepare_container(
        self,
        pod: Obj,
        run: PodRun,
        c: ContainerRun,
        volumes: Mapping[str, pathlib.Path],
        lookup: Any,
        services: list[podspec.ServiceTarget],
        *,
        strict_dns: bool,
    ) -> None:
        spec = c.spec
        c.mounts = podspec.container_mounts(spec, volumes)
        env = podspec.container_env(pod, spec, lookup)

        def dns(value: str, bare: bool = True) -> str:
            try:
                return podspec.rewrite_service(value, services, run.namespace, bare=bare)
            except podspec.UnresolvedService:
                if strict_dns:
                    raise
                logger.warning(
                    "pod %s/%s: starting with unresolved service in %r", run.namespace, run.name, value
                )
                return value

        env = {
            k: dns(podspec.rewrite_paths(v, c.mounts), podspec.env_may_be_bare_host(k))
            for k, v in env.items()
        }
        for mount in c.mounts:
            env[f"KUBELET_VOLUME_{mount.volume.upper().replace('-', '_').replace('.', '_')}"] = str(
                mount.local
            )
        c.env = {**self._base_env(run), **env}
        argv = podspec.container_argv(spec, run.ip, run.pod_dir / "work")
        argv = [argv[0]] + [podspec.rewrite_paths(podspec.expand(a, c.env), c.mounts) for a in argv[1:]]
        # Bare single-label words are rewritten only as a flag's value: `kubevine manager` stays.
        c.argv = self._bind_all(
            [argv[0]] + [dns(a, bare=argv[i].startswith("--")) for i, a in enumerate(argv[1:])], run
        )
        workdir = spec.get("workingDir")
        c.cwd = pathlib.Path(podspec.rewrite_paths(workdir, c.mounts)) if workdir else run.pod_dir / "work"
        for folder in (run.pod_dir / "home", c.cwd):
            if not folder.exists():
                folder.mkdir(parents=True)
                folder.chmod(0o777)  # the container may run as any user
        for kind in ("readinessProbe", "livenessProbe"):
            if spec.get(kind):
                probe = Probe(spec[kind], next_at=time.monotonic() + self._probe_delay(spec[kind], kind))
                setattr(c, "readiness" if kind == "readinessProbe" else "liveness", probe)

    # -- processes ------------------------------------------------------------------------

    def _start(self, run: PodRun, c: ContainerRun) -> None:
        log = self.log_path(run.namespace, run.name, c.name)
        with open(log, "ab") as out:
            out.write(f"--- process kubelet: starting {c.argv!r} (restart {c.restart_count})\n".encode())
            out.flush()
            try:
                c.proc = subprocess.Popen(
                    self._launch_argv(run, c),
                    env=c.env,
                    cwd=c.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                out.write(f"--- process kubelet: cannot start: {e}\n".encode())
                c.proc = None
                c.exit_code, c.reason, c.message = 128, "StartError", str(e)
                c.finished_at = c.started_at = _now()
                return
        c.started_at, c.finished_at, c.exit_code, c.reason = _now(), None, None, None
        if c.readiness is not None:
            c.readiness.ready, c.readiness.successes, c.readiness.failures = False, 0, 0

    def _check_processes(self) -> bool:
        """Notice exits (no API calls); True if some pod's status must be written."""
        changed = False
        for run in self.runs.values():
            for c in run.all_containers():
                if c.proc is not None and c.exit_code is None and c.proc.poll() is not None:
                    self._exited(run, c, c.proc.returncode)
                    c.finished_at = _now()
                    changed = True
                for probe, live in ((c.readiness, False), (c.liveness, True)):
                    if (
                        probe is not None
                        and c.running
                        and not probe.running
                        and time.monotonic() >= probe.next_at
                    ):
                        probe.running = True
                        task = asyncio.create_task(self._probe(run, c, probe, live))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        return changed

    def _advance(self, run: PodRun) -> None:
        """Start, restart or leave stopped each container, per the pod's restart policy."""
        if not run.prepared or run.failed_reason is not None or run.terminating is not None:
            return
        for c in run.init_containers:
            if c.exit_code == 0:
                continue
            if c.proc is None or (c.exit_code is not None and self._should_restart(run, c)):
                self._restart(run, c)
            return  # init containers run one at a time, each to success
        for c in run.containers:
            if c.proc is None and c.exit_code is None:
                self._start(run, c)
            elif c.exit_code is not None and self._should_restart(run, c):
                self._restart(run, c)

    def _should_restart(self, run: PodRun, c: ContainerRun) -> bool:
        return podstate.should_restart(run, c)

    def _restart(self, run: PodRun, c: ContainerRun) -> None:
        if c.proc is None and c.exit_code is None:
            self._start(run, c)
            return
        if c.next_start == 0.0:
            delay = min(5.0, 0.2 * 2 ** min(c.restart_count, 5))
            c.next_start = time.monotonic() + delay
            asyncio.get_running_loop().call_later(delay, self._wake.set)
            return
        if time.monotonic() >= c.next_start:
            c.last_terminated = {
                "terminated": {
                    "exitCode": c.exit_code,
                    "reason": "Completed" if c.exit_code == 0 else "Error",
                    "startedAt": c.started_at,
                    "finishedAt": c.finished_at,
                }
            }
            c.restart_count += 1
            c.next_start = 0.0
            self._start(run, c)

    def _probe_delay(self, spec: Obj, kind: str) -> float:
        """Seconds before a probe's first run. A readiness probe's delay and period are capped
        (`probe_period_cap`), so pods are Ready as soon as they answer; a liveness probe keeps
        the container's own, as a kubelet does: they are the time a slow start (imports on a
        busy machine) is given before the container is killed, and shortening them kills
        healthy containers."""
        delay = float(spec.get("initialDelaySeconds", 0))
        return delay if kind == "livenessProbe" else min(delay, self.probe_period_cap)

    def _probe_period(self, spec: Obj, liveness: bool) -> float:
        period = float(spec.get("periodSeconds", 10))
        return period if liveness else min(period, self.probe_period_cap)

    async def _probe(self, run: PodRun, c: ContainerRun, probe: Probe, liveness: bool) -> None:
        spec = probe.spec
        try:
            ok = await self._run_probe(run, c, spec)
        finally:
            probe.running = False
            probe.next_at = time.monotonic() + self._probe_period(spec, liveness)
        if ok:
            probe.successes, probe.failures = probe.successes + 1, 0
            if probe.successes >= int(spec.get("successThreshold", 1)) and not probe.ready:
                probe.ready = True
                self._wake.set()
        else:
            probe.failures, probe.successes = probe.failures + 1, 0
            if probe.failures >= int(spec.get("failureThreshold", 3)):
                if probe.ready:
                    probe.ready = False
                    self._wake.set()
                if liveness and c.running and c.proc is not None:
                    logger.info(
                        "pod %s/%s container %s failed liveness: restarting", run.namespace, run.name, c.name
                    )
                    probe.failures = 0
                    _signal_group(c.proc, signal.SIGKILL)

    async def _run_probe(self, run: PodRun, c: ContainerRun, spec: Obj) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        port_of = self._port_resolver(c)
        if "exec" in spec:
            return await self._exec(run, c, spec["exec"].get("command") or [], timeout) == 0
        if "tcpSocket" in spec:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(run.ip, port_of(spec["tcpSocket"]["port"])), timeout
                )
            except (TimeoutError, OSError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        if "httpGet" in spec:
            get = spec["httpGet"]
            url = (
                f"{get.get('scheme', 'HTTP').lower()}://{run.ip}:{port_of(get['port'])}{get.get('path', '/')}"
            )
            try:
                async with self.client.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False
                ) as rsp:
                    return 200 <= rsp.status < 400
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        return True

    @staticmethod
    def _port_resolver(c: ContainerRun) -> Any:
        def port_of(port: Any) -> int:
            if isinstance(port, str) and not port.isdigit():
                for cp in c.spec.get("ports") or []:
                    if cp.get("name") == port:
                        return int(cp["containerPort"])
            return int(port)

        return port_of

    async def _exec(self, run: PodRun, c: ContainerRun, command: list[str], timeout: float) -> int:
        """Run an exec probe or hook as a local command with the container's env and mounts."""
        argv = self._exec_prefix(run, c) + podspec.local_command(
            [podspec.rewrite_paths(podspec.expand(str(w), c.env), c.mounts) for w in command]
        )
        log = self.log_path(run.namespace, run.name, c.name)

        def call() -> int:
            with open(log, "ab") as out:
                try:
                    return subprocess.run(
                        argv,
                        env=c.env,
                        cwd=c.cwd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        timeout=timeout,
                        check=False,
                    ).returncode
                except (OSError, subprocess.TimeoutExpired) as e:
                    out.write(f"--- process kubelet: exec {argv!r} failed: {e}\n".encode())
                    return 1

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _kill(self, run: PodRun, grace: float) -> None:
        """preStop hooks, then SIGTERM, then SIGKILL once the grace period is over."""
        deadline = time.monotonic() + grace
        live = [c for c in run.all_containers() if c.running]
        if grace > 0:
            hooks: list[Coroutine[Any, Any, object]] = []
            for c in live:
                pre_stop = (c.spec.get("lifecycle") or {}).get("preStop") or {}
                if "exec" in pre_stop:
                    hooks.append(self._exec(run, c, pre_stop["exec"].get("command") or [], timeout=grace))
                elif "httpGet" in pre_stop:
                    hooks.append(self._run_probe(run, c, pre_stop))
                elif "sleep" in pre_stop:
                    hooks.append(asyncio.sleep(min(float(pre_stop["sleep"].get("seconds", 0)), grace)))
            if hooks:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*hooks, return_exceptions=True), timeout=grace)
        for c in live:
            if c.proc is not None:
                _signal_group(c.proc, signal.SIGTERM)
        while any(c.running for c in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in live:
            if c.proc is not None and c.running:
                _signal_group(c.proc, signal.SIGKILL)
        for c in live:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=5)
                _signal_group(c.proc, signal.SIGKILL)  # leftovers of the process group
        self._wake.set()

    async def _shutdown(self) -> None:
        await asyncio.gather(
            *(self._kill(run, grace=0.5) for run in self.runs.values()), return_exceptions=True
        )
        with contextlib.suppress(Exception):
            for name in self.nodes:
                await self.client.delete(path("v1", "nodes", name=name))

    # -- status ---------------------------------------------------------------------------

    async def _write_status(self, pod: Obj, run: PodRun) -> None:
        status = self._status(pod, run)
        if status == run.last_status:
            return
        meta = pod["metadata"]
        body = dict(status)
        if self.status_patch == "strategic" and body.get("podIPs"):
            # A strategic merge would add this run's IP to those of an earlier run of the pod (a
            # node that came back runs its pods again, in new sandboxes): the API server refuses
            # two IPs of one family. The pod's IPs are this run's, and only these.
            body["podIPs"] = [*body["podIPs"], {"$patch": "replace"}]
        await self.client.patch(
            path("v1", "pods", meta["namespace"], meta["name"], "status"),
            {"status": body},
            kind=self.status_patch,
        )
        run.last_status = status

    def _status(self, pod: Obj, run: PodRun) -> Obj:
        return podstate.pod_status(pod, run, host_ip=self._host_ip(run.node))


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class KubeletThread:
    """A Kubelet in a daemon thread with its own event loop (for the pytest fixture)."""

    def __init__(self, kubelet_factory: Any) -> None:
        self._factory = kubelet_factory
        self.kubelet: Kubelet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="process-kubelet", daemon=True)

    def start(self) -> Kubelet:
        self._thread.start()
        self._started.wait(10)
        assert self.kubelet is not None
        return self.kubelet

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.kubelet = self._factory()
            self._started.set()
            await self.kubelet.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:
            self._error = e
            self._started.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube.kubelet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", type=pathlib.Path, required=True)
    parser.add_argument(
        "--root", type=pathlib.Path, required=True, help="directory for node dirs, pod dirs and logs"
    )
    parser.add_argument("--nodes", default="node-a,node-b", help="comma-separated node names")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    config = yaml.safe_load(args.kubeconfig.read_text())
    url = config["clusters"][0]["cluster"]["server"]
    kubelet = Kubelet(url, args.root, [n for n in args.nodes.split(",") if n], kubeconfig=args.kubeconfig)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await kubelet.run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
