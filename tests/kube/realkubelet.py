"""The process kubelet as one node of a real cluster (tests/realkube).

Against a real kube-apiserver the scheduler, the controller-manager and garbage collection
are the real ones; `RealKubelet` is only the kubelet of one Node, and runs inside that
node's network namespace (the control plane starts it there with nsenter). It

- registers the Node (its client certificate is `system:node:<name>`, so the Node
  authorizer and NodeRestriction hold it to what a kubelet may do), keeps it Ready with a
  Lease in kube-node-lease renewed every quarter of its duration, and posts node status;
- watches the pods bound to it (`spec.nodeName`), gives each an IP from the node's CIDR
  (added on the namespace's eth0), runs its containers as processes (podspec rules),
  each in a memory cgroup with the container's limit (so OOMKilled is the kernel's
  verdict), with the projected service-account token obtained through the TokenRequest API
  and bind-mounted at /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_*
  pointing at the API server's real address (there is no kube-proxy);
- reports status as a kubelet does: Pending with ErrImagePull / ImagePullBackOff for an
  image it cannot run, CrashLoopBackOff, OOMKilled, exit codes 128+signal, Ready from
  probes; and deletes a pod (grace 0, uid precondition) once its processes are gone.

By hand (from the repository root, as root, inside the node's namespace):
`nsenter --net=/run/netns/kv-node-a python -m tests.kube.realkubelet --kubeconfig K
 --root DIR --node node-a --node-ip 10.77.0.10 --pod-cidr 10.78.0.0/24 --apiserver 10.77.0.1:6443`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import signal
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp

from . import kubeletapi, podspec, realnode
from .kubeclient import ApiError, KubeClient, path
from .kubelet import Kubelet
from .podstate import ContainerRun, PodRun, _now

logger = logging.getLogger(__name__)
Obj = dict[str, Any]

#: Image pull back-off, compressed like every timing of the process kubelet (a real one
#: starts at 10 s and doubles up to 5 min).
PULL_BACKOFF_START = 1.0
PULL_BACKOFF_MAX = 10.0


@dataclasses.dataclass
class PullState:
    attempts: int = 0
    next_at: float = 0.0
    message: str = ""


class RealKubelet(Kubelet):
    def __init__(
        self,
        kubeconfig: pathlib.Path,
        root: pathlib.Path,
        node: realnode.NodeConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__("", root, [node.name], kubeconfig=kubeconfig, **kwargs)
        self.node = node
        self.addresses = realnode.PodAddresses(node.pod_cidr, node.interface, node.netns_prefix)
        self.cgroups = realnode.MemoryCgroups(node.cgroup_name, enabled=node.memory_cgroups)
        self.node_uid: str | None = None
        self._pulls: dict[str, PullState] = {}
        self._cgroup_of: dict[tuple[str, str], pathlib.Path | None] = {}
        self._oom_baseline: dict[tuple[str, str], int] = {}
        self._events_sent: set[tuple[str, str, str]] = set()
        self._tokens: dict[tuple[str, str], str] = {}
        self._users: dict[tuple[str, str], realnode.RunAs | None] = {}

    status_patch = "strategic"

    # -- client, node, heartbeats ---------------------------------------------------------

    def _make_client(self) -> KubeClient:
        assert self.kubeconfig is not None
        return KubeClient.from_kubeconfig(self.kubeconfig)

    def _watch_urls(self) -> tuple[str, ...]:
        return ("/api/v1/pods", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices")

    async def _watch(self, url: str) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.node.name}"} if url == "/api/v1/pods" else {}
        async for _ in self.client.watch(url, **params):
            self._wake.set()

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._heartbeat(), self._stall_detector(), self._serve_api()]

    async def _serve_api(self) -> None:
        """Container logs on <node IP>:10250 for the API server (`kubectl logs`)."""
        n = self.node
        if n.serving_cert is None or n.serving_key is None or n.client_ca is None:
            return

        def pod_running(ns: str, name: str) -> bool:
            return any(
                r.namespace == ns and r.name == name and any(c.running for c in r.all_containers())
                for r in self.runs.values()
            )

        app = kubeletapi.make_app(self.log_path, pod_running)
        ctx = kubeletapi.server_context(n.serving_cert, n.serving_key, n.client_ca)
        runner = await kubeletapi.serve(app, n.ip, n.api_port, ctx)
        try:
            await asyncio.Event().wait()  # until cancelled at shutdown
        finally:
            await runner.cleanup()

    async def _stall_detector(self) -> None:
        """Warn when the event loop was blocked (a heartbeat missed for a reason of ours)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.5)
            late = time.monotonic() - before - 0.5
            if late > 1.0:
                logger.warning(
                    "node %s: the kubelet's event loop was blocked for %.1f s", self.node.name, late
                )

    async def _register_nodes(self) -> None:
        self.addresses.flush_stale()
        self.cgroups.reset()
        self.node_dir(self.node.name).mkdir(parents=True, exist_ok=True)
        url = path("v1", "nodes", name=self.node.name)
        existing = await self.client.get(url)
        if existing is None:
            try:
                existing = await self.client.create("/api/v1/nodes", realnode.node_manifest(self.node))
            except ApiError as e:
                if e.status != 409:
                    raise
                existing = await self.client.get(url)
        assert existing is not None
        self.node_uid = existing["metadata"]["uid"]
        await self._post_node_status(existing)
        await self._renew_lease()

    async def _post_node_status(self, previous: Obj | None = None) -> None:
        url = path("v1", "nodes", name=self.node.name, sub="status")
        if previous is None:
            previous = await self.client.get(path("v1", "nodes", name=self.node.name))
        status = realnode.node_status(self.node, previous)
        await self.client.patch(url, {"status": status}, kind="strategic")

    async def _renew_lease(self) -> None:
        url = path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.node.name)
        previous = await self.client.get(url)
        body = realnode.lease(self.node, self.node_uid, previous)
        if previous is None:
            await self.client.create(path("coordination.k8s.io/v1", "leases", "kube-node-lease"), body)
        else:
            await self.client.request("PUT", url, body)

    async def _heartbeat(self) -> None:
        """Renew the Lease every quarter of its duration; post full status every status_period."""
        last_status = time.monotonic()
        period = self.node.lease_duration / 4
        while True:
            slept = time.monotonic()
            await asyncio.sleep(period)
            late = time.monotonic() - slept - period
            if late > period:
                logger.warning(
                    "node %s heartbeat %.1f s late (the kubelet's loop was blocked)", self.node.name, late
                )
            try:
                began = time.monotonic()
                await self._renew_lease()
                took = time.monotonic() - began
                if took > 2.0:
                    logger.warning("node %s: renewing the lease took %.1f s", self.node.name, took)
                if time.monotonic() - last_status >= self.node.status_period:
                    await self._post_node_status()
                    last_status = time.monotonic()
            except (TimeoutError, ApiError, aiohttp.ClientError) as e:
                logger.warning("node %s heartbeat failed: %r", self.node.name, e)
            except Exception:
                logger.exception("node %s heartbeat failed", self.node.name)

    # -- pods -----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        pods = await self.client.list("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node.name}")
        await self._sync_pods(pods)

    def _allocate_ip(self, node: str) -> str:
        return self.addresses.allocate()

    def _host_ip(self, node: str) -> str:
        return self.node.ip

    async def _forget(self, run: PodRun) -> None:
        self.addresses.release(run.ip)
        self.cgroups.remove_pod(run.uid)
        self._pulls.pop(run.uid, None)
        for token_key in [k for k in self._tokens if k[0] == run.uid]:
            del self._tokens[token_key]
        for key in [k for k in self._users if k[0] == run.uid]:
            del self._users[key]
        for key in [k for k in self._cgroup_of if k[0] == run.uid]:
            self._cgroup_of.pop(key, None)
            self._oom_baseline.pop(key, None)

    async def _lookup_all(
        self, pod: Obj, own_ip: str
    ) -> tuple[dict[tuple[str, str], Obj], list[podspec.ServiceTarget]]:
        """What the pod refers to, read by name (the Node authorizer allows no more), and tokens.

        Tokens are stored under ("serviceaccounttoken", audience) for podspec's projected volumes.
        """
        ns = pod["metadata"]["namespace"]
        objs: dict[tuple[str, str], Obj] = {}
        for kind, name in sorted(realnode.pod_references(pod)):
            plural = "secrets" if kind == "secret" else "configmaps"
            try:
                found = await self.client.get(path("v1", plural, ns, name))
            except ApiError as e:
                if e.status != 403:  # forbidden reads as missing, as a kubelet sees it
                    raise
                found = None
            if found is not None:
                objs[(kind, name)] = found
        sa = pod["spec"].get("serviceAccountName") or "default"
        uid = pod["metadata"]["uid"]
        for audience, expiration in realnode.token_requests(pod):
            token = self._tokens.get((uid, audience))
            if token is None:
                result = await self.client.create(
                    path("v1", "serviceaccounts", ns, sa, "token"),
                    realnode.token_request_body(pod, audience, expiration),
                )
                token = self._tokens[(uid, audience)] = str(result["status"]["token"])
            objs[("serviceaccounttoken", audience)] = {"token": token}
        services = await self.client.list("/api/v1/services")
        slices = await self.client.list("/apis/discovery.k8s.io/v1/endpointslices")
        return objs, realnode.service_targets(services, slices, pod, own_ip)

    async def _prepare(self, pod: Obj, run: PodRun) -> None:
        pull = self._pulls.get(run.uid)
        if pull is not None and time.monotonic() < pull.next_at:
            return  # backing off an image "pull"
        await super()._prepare(pod, run)
        if run.prepared and pull is not None:
            self._pulls.pop(run.uid, None)

    def _not_runnable(self, run: PodRun, e: podspec.NotRunnable) -> None:
        """Pending, waiting: ErrImagePull at each attempt, ImagePullBackOff in between."""
        if e.reason not in ("ErrImageNeverPull", "ErrImagePull"):
            run.waiting_reason, run.waiting_message = e.reason, e.message
            return
        pull = self._pulls.setdefault(run.uid, PullState())
        pull.attempts += 1
        delay = min(PULL_BACKOFF_MAX, PULL_BACKOFF_START * 2 ** (pull.attempts - 1))
        pull.next_at = time.monotonic() + delay
        run.waiting_reason, run.waiting_message = "ErrImagePull", e.message
        image = next((c.spec.get("image", "") for c in run.all_containers()), "")
        pull.message = f'Back-off pulling image "{image}": {e.message}'
        self._event(run, "Warning", "Failed", f'Failed to pull image "{image}": {e.message}')
        loop = asyncio.get_running_loop()
        loop.call_later(min(0.5, delay / 2), self._enter_backoff, run)
        loop.call_later(delay, self._wake.set)

    def _enter_backoff(self, run: PodRun) -> None:
        pull = self._pulls.get(run.uid)
        if pull is not None and not run.prepared:
            run.waiting_reason, run.waiting_message = "ImagePullBackOff", pull.message
            self._event(run, "Normal", "BackOff", pull.message)
            self._wake.set()

    def _base_env(self, run: PodRun) -> dict[str, str]:
        base = super()._base_env(run)
        base.pop("KUBECONFIG", None)  # pods authenticate with their own service-account token
        return {**base, **realnode.service_env(self.node)}

    def _launch_argv(self, run: PodRun, c: ContainerRun) -> list[str]:
        key = (run.uid, c.name)
        cgroup = self.cgroups.create(run.uid, c.name, realnode.memory_limit(c.spec))
        self._cgroup_of[key] = cgroup
        self._oom_baseline[key] = self.cgroups.oom_kills(cgroup)
        return realnode.wrap_command(
            c.argv,
            cgroup,
            realnode.bind_mounts(c.mounts),
            enter=self.addresses.enter(run.ip),
            user=self._users.get(key),
        )

    def _volumes_ready(self, pod: Obj, run: PodRun, volumes: Mapping[str, pathlib.Path]) -> None:
        realnode.set_volume_owners(pod, volumes)
        spec = pod.get("spec") or {}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            self._users[(run.uid, c["name"])] = realnode.run_as(pod, c)

    def _exec_prefix(self, run: PodRun, c: ContainerRun) -> list[str]:
        return self.addresses.enter(run.ip)

    def _bind_all(self, argv: list[str], run: PodRun) -> list[str]:
        return argv if self.node.netns_prefix else super()._bind_all(argv, run)

    def _exited(self, run: PodRun, c: ContainerRun, returncode: int) -> None:
        key = (run.uid, c.name)
        code = 128 - returncode if returncode < 0 else returncode
        c.exit_code = code
        oom = self.cgroups.oom_kills(self._cgroup_of.get(key)) > self._oom_baseline.get(key, 0)
        c.reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        if oom:
            self._event(run, "Warning", "OOMKilling", f"container {c.name} was killed: out of memory")

    async def _write_status(self, pod: Obj, run: PodRun) -> None:
        await super()._write_status(pod, run)
        phase = (run.last_status or {}).get("phase")
        if phase in ("Succeeded", "Failed") and run.ip in self.addresses.in_use:
            self.addresses.release(run.ip)  # the sandbox is gone; the status keeps the IP

    def _status(self, pod: Obj, run: PodRun) -> Obj:
        status = super()._status(pod, run)
        started = any(c.started_at for c in run.all_containers())
        status["conditions"].insert(
            1,
            {
                "type": "PodReadyToStartContainers",
                "status": "True" if run.prepared or started else "False",
                "lastTransitionTime": run.started_at,
            },
        )
        return status

    async def _shutdown(self) -> None:
        """Stop every pod's processes; the Node stays (a kubelet going away does not delete it)."""
        await asyncio.gather(
            *(self._kill(run, grace=0.5) for run in self.runs.values()), return_exceptions=True
        )
        for run in list(self.runs.values()):
            await self._forget(run)
        self.cgroups.remove_all()

    # -- events ---------------------------------------------------------------------------

    def _event(self, run: PodRun, type_: str, reason: str, message: str) -> None:
        """Post an Event about the pod (once per pod, reason and message), as a kubelet does."""
        key = (run.uid, reason, message)
        if key in self._events_sent or self._client is None:
            return
        self._events_sent.add(key)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{run.name}.", "namespace": run.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": run.name,
                "namespace": run.namespace,
                "uid": run.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }

        async def post() -> None:
            with contextlib.suppress(ApiError, TimeoutError, aiohttp.ClientError):
                await self.client.create(path("v1", "events", run.namespace), body)

        task = asyncio.get_running_loop().create_task(post())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube.realkubelet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", type=pathlib.Path, required=True, help="the node's kubeconfig")
    parser.add_argument("--root", type=pathlib.Path, required=True, help="node dirs, pod dirs and logs")
    parser.add_argument("--node", required=True)
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--pod-cidr", required=True)
    parser.add_argument("--apiserver", required=True, help="host:port pods reach the API server on")
    parser.add_argument("--lease-duration", type=int, default=10)
    parser.add_argument("--status-period", type=float, default=10.0)
    parser.add_argument("--label", action="append", default=[], help="key=value, repeatable")
    parser.add_argument("--capacity", action="append", default=[], help="resource=quantity, repeatable")
    parser.add_argument("--no-memory-cgroups", action="store_true")
    parser.add_argument("--cgroup-name", help="the node's memory cgroup under the kubelet's own")
    parser.add_argument(
        "--netns-prefix", help="the node's network namespace: each pod gets <prefix>-p<n> of its own"
    )
    parser.add_argument("--tls-cert", type=pathlib.Path, help="serving certificate of the kubelet API")
    parser.add_argument("--tls-key", type=pathlib.Path)
    parser.add_argument("--client-ca", type=pathlib.Path, help="CA of the API server's kubelet client")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, _, port = args.apiserver.rpartition(":")
    node = realnode.NodeConfig(
        name=args.node,
        ip=args.node_ip,
        pod_cidr=args.pod_cidr,
        apiserver_host=host,
        apiserver_port=int(port),
        lease_duration=args.lease_duration,
        status_period=args.status_period,
        labels=dict(kv.split("=", 1) for kv in args.label),
        capacity=dict(kv.split("=", 1) for kv in args.capacity),
        memory_cgroups=not args.no_memory_cgroups,
        cgroup_name=args.cgroup_name or f"kubevine-{args.node}",
        netns_prefix=args.netns_prefix,
        serving_cert=args.tls_cert,
        serving_key=args.tls_key,
        client_ca=args.client_ca,
    )
    kubelet = RealKubelet(args.kubeconfig, args.root, node)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await kubelet.run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
