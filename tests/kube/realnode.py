"""What the process kubelet does only against a real API server: be one real node.

Against the emulator, `Kubelet` plays scheduler, controllers and kubelets at once. Against
a real control plane (tests/realkube) it plays one kubelet and nothing else, from inside
that node's network namespace. This module holds that mode's parts:

- `NodeConfig`: the node's name, address, pod CIDR, heartbeat timings, the API server's
  real address (there is no kube-proxy, so KUBERNETES_SERVICE_HOST is that address).
- `node_manifest`, `node_status`, `lease`: the Node object, its status with Ready and the
  pressure conditions, and its heartbeat Lease in kube-node-lease.
- `PodAddresses`: pod IPs from the node's CIDR, added to and removed from its eth0.
- `MemoryCgroups`: a memory cgroup (v1) per container with the container's memory limit,
  nested under the kubelet's own cgroup; the kernel's OOM killer makes OOMKilled real.
- `wrap_command`: the argv that joins that cgroup and bind-mounts well-known paths (the
  service-account token directory) in a private mount namespace, then execs the container.
- `pod_references`, `service_targets`: what a pod reads (Secrets, ConfigMaps, tokens, by
  name, as the Node authorizer allows) and Service DNS from the real EndpointSlices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import podspec

logger = logging.getLogger(__name__)
Obj = dict[str, Any]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Mount paths that client libraries hard-code: bind-mounted for real in the container's own
#: mount namespace (besides the usual rewriting of mount paths in env and args).
BIND_PREFIXES = ("/var/run/secrets/", "/run/secrets/")


@dataclasses.dataclass
class NodeConfig:
    name: str
    ip: str
    pod_cidr: str
    apiserver_host: str
    apiserver_port: int
    interface: str = "eth0"
    lease_duration: int = 10  # leaseDurationSeconds; renewed every quarter of it
    status_period: float = 10.0  # full node status at least this often
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    capacity: dict[str, str] = dataclasses.field(default_factory=dict)
    memory_cgroups: bool = True
    cgroup_name: str = ""  # under the kubelet's own memory cgroup; default kubevine-<name>
    netns_prefix: str | None = None  # the node's network namespace; pods get <prefix>-p<n> each
    # The kubelet API (container logs for `kubectl logs`) on <ip>:10250, when all three are given.
    serving_cert: pathlib.Path | None = None
    serving_key: pathlib.Path | None = None
    client_ca: pathlib.Path | None = None
    api_port: int = 10250

    def __post_init__(self) -> None:
        self.cgroup_name = self.cgroup_name or f"kubevine-{self.name}"


def now(micro: bool = False) -> str:
    t = datetime.datetime.now(tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else t.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the Node and its heartbeats -------------------------------------------------------------


def default_capacity() -> dict[str, str]:
    return {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}


def node_manifest(cfg: NodeConfig) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.name,
            "labels": {
                "kubernetes.io/hostname": cfg.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **cfg.labels,
            },
        },
        "spec": {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]},
    }


def node_status(cfg: NodeConfig, previous: Obj | None) -> Obj:
    """Ready plus the three pressure conditions, with transition times kept when unchanged."""
    capacity = {**default_capacity(), **cfg.capacity}
    t = now()
    old = {c.get("type"): c for c in ((previous or {}).get("status") or {}).get("conditions") or []}

    def cond(type_: str, status: str, reason: str, message: str) -> Obj:
        prev = old.get(type_)
        since = prev["lastTransitionTime"] if prev and prev.get("status") == status else t
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": t,
            "lastTransitionTime": since,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": cfg.ip},
            {"type": "Hostname", "address": cfg.name},
        ],
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.api_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": os.uname().release,
            "osImage": "process kubelet (kubevine tests)",
            "containerRuntimeVersion": "process://local",
            "kubeletVersion": "v1.37.2",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def lease(cfg: NodeConfig, node_uid: str | None, previous: Obj | None) -> Obj:
    body: Obj = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": cfg.name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": cfg.name,
            "leaseDurationSeconds": cfg.lease_duration,
            "renewTime": now(micro=True),
        },
    }
    if node_uid:
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": cfg.name, "uid": node_uid}
        ]
    if previous is not None:
        body["metadata"]["resourceVersion"] = previous["metadata"]["resourceVersion"]
    return body


# -- pod addresses ---------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


class PodAddresses:
    """Pod IPs from the node's /24 (from .2 up, not reused until the range wraps), each in a
    network namespace of its own, as a CNI plugin makes them.

    Pod `10.80.0.5` lives in namespace `<node namespace>-p5`: `eth0` there holds the address
    (/32) with a default route through a link-local gateway the node answers for
    (`proxy_arp`, as Calico does); the node side of the veth pair, `p5`, has a /32 route to
    the pod. The node forwards, and answers ARP on its own `eth0` for its pods, so the test
    process and other nodes reach every pod over the bridge. Each pod therefore has its own
    ports and its own 127.0.0.1: a process may bind all addresses, and what connects to
    127.0.0.1 inside the pod (what `kubectl port-forward` does) reaches it. Connections a pod
    opens leave from the pod's address.

    Without `netns_prefix` (a kubelet started by hand, outside a cluster) the addresses are
    added on the node's `eth0` instead and pods share the node's network namespace.
    """

    GATEWAY = "169.254.1.1"

    def __init__(self, cidr: str, interface: str, netns_prefix: str | None = None) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.interface = interface
        self.netns_prefix = netns_prefix
        self.in_use: set[str] = set()
        self._hosts = [str(h) for h in self.net.hosts()][1:]  # .1 is left alone, as a CNI's gateway
        self._next = 0

    def namespace(self, address: str) -> str | None:
        """The network namespace of the pod with this address (None: the node's own)."""
        if self.netns_prefix is None:
            return None
        return f"{self.netns_prefix}-p{address.rsplit('.', 1)[1]}"

    @staticmethod
    def _link(address: str) -> str:
        return f"p{address.rsplit('.', 1)[1]}"

    def flush_stale(self) -> None:
        """Remove what a previous kubelet of the node left: addresses on the interface, pod
        namespaces (their processes killed first) and their links."""
        out = _ip("-j", "addr", "show", "dev", self.interface).stdout
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info") or []:
                local = info.get("local", "")
                if info.get("family") == "inet" and ipaddress.ip_address(local) in self.net:
                    _ip("addr", "del", f"{local}/32", "dev", self.interface, check=False)
        if self.netns_prefix is None:
            return
        _sysctl("net.ipv4.ip_forward", "1")
        _sysctl(f"net.ipv4.conf.{self.interface}.proxy_arp", "1")
        for name in pod_namespaces(self.netns_prefix):
            remove_namespace(name)

    def allocate(self) -> str:
        for _ in range(len(self._hosts)):
            candidate = self._hosts[self._next % len(self._hosts)]
            self._next += 1
            if candidate not in self.in_use:
                self._attach(candidate)
                self.in_use.add(candidate)
                return candidate
        raise RuntimeError(f"no free pod IP left in {self.net}")

    def _attach(self, address: str) -> None:
        ns = self.namespace(address)
        if ns is None:
            _ip("addr", "add", f"{address}/32", "dev", self.interface)
            return
        remove_namespace(ns)  # a leftover of an earlier pod with this address
        link = self._link(address)
        _ip("link", "del", link, check=False)
        _ip("netns", "add", ns)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _sysctl(f"net.ipv4.conf.{link}.proxy_arp", "1")
        _ip("link", "set", link, "up")
        _ip("route", "replace", f"{address}/32", "dev", link)
        for args in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{address}/32", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("route", "add", self.GATEWAY, "dev", "eth0", "scope", "link"),
            ("route", "add", "default", "via", self.GATEWAY, "dev", "eth0"),
        ):
            _ip("-n", ns, *args)

    def release(self, address: str) -> None:
        if address not in self.in_use:
            return
        self.in_use.discard(address)
        ns = self.namespace(address)
        if ns is None:
            _ip("addr", "del", f"{address}/32", "dev", self.interface, check=False)
            return
        remove_namespace(ns)
        _ip("link", "del", self._link(address), check=False)

    def enter(self, address: str) -> list[str]:
        """The argv prefix that runs a command in the pod's network namespace."""
        ns = self.namespace(address)
        return [] if ns is None else ["nsenter", f"--net=/run/netns/{ns}", "--"]


def _sysctl(key: str, value: str) -> None:
    pathlib.Path("/proc/sys", *key.split(".")).write_text(value)


def pod_namespaces(prefix: str) -> list[str]:
    """Network namespaces of the pods of the node whose namespace is `prefix`."""
    out = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.split()]
    return [n for n in names if re.fullmatch(re.escape(prefix) + r"-p\d+", n)]


def remove_namespace(name: str) -> None:
    """SIGKILL every process left in a pod's network namespace, then delete it."""
    if not os.path.exists(f"/run/netns/{name}"):
        return
    deadline = time.monotonic() + 10
    while True:
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in network namespace {name} survive SIGKILL")
        time.sleep(0.05)
    _ip("netns", "del", name, check=False)


# -- memory cgroups --------------------------------------------------------------------------

MEMORY_ROOT = pathlib.Path("/sys/fs/cgroup/memory")


def own_memory_cgroup() -> pathlib.Path | None:
    """This process's memory cgroup (v1) directory, if the hierarchy is mounted and writable."""
    try:
        for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):
                path = MEMORY_ROOT / rel.lstrip("/")
                return path if os.access(path, os.W_OK) else None
    except OSError:
        return None
    return None


def _remove_tree(path: pathlib.Path) -> None:
    """rmdir a cgroup tree bottom-up (cgroup directories hold no files to delete)."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            child.rmdir()
        except OSError as e:
            logger.warning("cannot remove cgroup %s: %s", child, e)
    try:
        path.rmdir()
    except OSError as e:
        logger.warning("cannot remove cgroup %s: %s", path, e)


class MemoryCgroups:
    """`<own cgroup>/<name>/<pod uid>/<container>`, one per started container."""

    def __init__(self, name: str, enabled: bool = True) -> None:
        own = own_memory_cgroup() if enabled else None
        self.root = own / name if own is not None else None
        if enabled and self.root is None:
            logger.warning("memory cgroups are not writable here: memory limits are not enforced")

    def reset(self) -> None:
        """Remove what a previous kubelet of this node left (its processes are gone)."""
        if self.root is not None:
            _remove_tree(self.root)
            self.root.mkdir(parents=True, exist_ok=True)

    def create(self, pod_uid: str, container: str, limit_bytes: int | None) -> pathlib.Path | None:
        if self.root is None:
            return None
        path = self.root / pod_uid / container
        path.mkdir(parents=True, exist_ok=True)
        if limit_bytes is not None:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        return path

    @staticmethod
    def oom_kills(path: pathlib.Path | None) -> int:
        if path is None:
            return 0
        try:
            text = (path / "memory.oom_control").read_text()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    def remove_pod(self, pod_uid: str) -> None:
        if self.root is not None:
            _remove_tree(self.root / pod_uid)

    def remove_all(self) -> None:
        if self.root is not None:
            _remove_tree(self.root)


def memory_limit(container: Mapping[str, Any]) -> int | None:
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(podspec._quantity(str(value))) if value is not None else None


# Joins the cgroup, bind-mounts (read-only) into a private mount namespace, then execs the
# container's command: the process keeps the PID the kubelet started, so signals and exit
# codes are the container's own.
_WRAPPER = r"""
set -e
cg=$1; shift
if [ "$cg" != - ]; then echo $$ > "$cg/cgroup.procs"; fi
while [ "$1" != -- ]; do
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mount -o remount,bind,ro "$2"
    shift 2
done
shift
exec "$@"
"""


def wrap_command(
    argv: list[str],
    cgroup: pathlib.Path | None,
    binds: Iterable[tuple[pathlib.Path, str]],
    *,
    enter: list[str] | None = None,
    user: RunAs | None = None,
) -> list[str]:
    """The container's argv inside its pod's network namespace (`enter`), its memory cgroup,
    a private mount namespace with `binds`, and as `user` (setpriv, the last step before
    exec, so the root-only steps before it still work)."""
    binds = list(binds)
    enter = list(enter or [])
    if user is not None:
        argv = [*user.setpriv(), *argv]
    if cgroup is None and not binds:
        return [*enter, *argv]
    pairs = [str(w) for src, dst in binds for w in (src, dst)]
    script = ["/bin/sh", "-c", _WRAPPER, "kubelet-start", str(cgroup or "-"), *pairs, "--", *argv]
    if binds:
        script = ["unshare", "--mount", "--propagation", "private", "--", *script]
    return [*enter, *script]


# -- users and volume ownership --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunAs:
    """The identity a container's process takes: `runAsUser`/`runAsGroup` (container over
    pod), and `fsGroup` plus `supplementalGroups` as supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def setpriv(self) -> list[str]:
        """The process takes the user, group and groups, and keeps one capability,
        DAC_READ_SEARCH, so that it can read the machine's Python (a venv whose interpreter
        lives under /root): reading is not what these tests check; writing is, and every write
        is checked as the container's user."""
        groups = ["--groups", ",".join(str(g) for g in self.groups)] if self.groups else ["--clear-groups"]
        caps = ["--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search"] if self.uid else []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", *groups, *caps, "--"]


def run_as(pod: Obj, container: Mapping[str, Any]) -> RunAs | None:
    """Who the container runs as; None for root with no groups to add (the process kubelet's
    own identity, what an image without USER gives)."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    groups = [int(g) for g in pod_ctx.get("supplementalGroups") or []]
    if pod_ctx.get("fsGroup") is not None:
        groups.insert(0, int(pod_ctx["fsGroup"]))
    if uid is None and gid is None and not groups:
        return None
    return RunAs(int(uid or 0), int(gid or 0), tuple(dict.fromkeys(groups)))


def set_volume_owners(pod: Obj, volumes: Mapping[str, pathlib.Path]) -> None:
    """Volume ownership as a kubelet manages it for `fsGroup`: emptyDirs are world-writable
    (podspec makes them so); claims, Secrets, ConfigMaps and projected volumes belong to the
    fsGroup (group-writable claims, group-readable files), the service-account token to the
    pod's user. hostPath volumes are never touched: what is on the node stays as it is."""
    spec = pod.get("spec") or {}
    ctx = spec.get("securityContext") or {}
    fs_group = ctx.get("fsGroup")
    users = {
        c.get("securityContext", {}).get("runAsUser", ctx.get("runAsUser"))
        for c in spec.get("containers") or []
    }
    owner = int(next(iter(users))) if len(users) == 1 and None not in users else 0
    for vol in spec.get("volumes") or []:
        local = volumes.get(vol["name"])
        if local is None or "hostPath" in vol or "emptyDir" in vol:
            continue
        if fs_group is None and not owner:
            continue
        group = int(fs_group) if fs_group is not None else 0
        if "persistentVolumeClaim" in vol:
            for path_ in [local, *local.rglob("*")]:
                os.chown(path_, -1, group)
                path_.chmod(path_.stat().st_mode | 0o070 | (0o2000 if path_.is_dir() else 0))
            continue
        for path_ in [local, *local.rglob("*")]:
            os.chown(path_, owner, group)
            if path_.is_file():
                path_.chmod((path_.stat().st_mode & 0o777) | 0o040)


def bind_mounts(mounts: Iterable[podspec.Mount]) -> list[tuple[pathlib.Path, str]]:
    return [(m.local, m.mount_path) for m in mounts if m.mount_path.startswith(BIND_PREFIXES)]


# -- what a pod reads --------------------------------------------------------------------------


def pod_references(pod: Obj) -> set[tuple[str, str]]:
    """("secret"|"configmap", name) for every Secret and ConfigMap the pod refers to."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in c.get("envFrom") or []:
            if source.get("secretRef"):
                refs.add(("secret", source["secretRef"].get("name", "")))
            if source.get("configMapRef"):
                refs.add(("configmap", source["configMapRef"].get("name", "")))
        for item in c.get("env") or []:
            value_from = item.get("valueFrom") or {}
            if value_from.get("secretKeyRef"):
                refs.add(("secret", value_from["secretKeyRef"].get("name", "")))
            if value_from.get("configMapKeyRef"):
                refs.add(("configmap", value_from["configMapKeyRef"].get("name", "")))
    for vol in spec.get("volumes") or []:
        if vol.get("secret"):
            refs.add(("secret", vol["secret"].get("secretName", "")))
        if vol.get("configMap"):
            refs.add(("configmap", vol["configMap"].get("name", "")))
        for source in (vol.get("projected") or {}).get("sources") or []:
            if source.get("secret"):
                refs.add(("secret", source["secret"].get("name", "")))
            if source.get("configMap"):
                refs.add(("configmap", source["configMap"].get("name", "")))
    return {r for r in refs if r[1]}


def token_requests(pod: Obj) -> list[tuple[str, int]]:
    """(audience, expirationSeconds) of every serviceAccountToken projection of the pod."""
    found = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        for source in (vol.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token:
                found.append((str(token.get("audience") or ""), int(token.get("expirationSeconds") or 3600)))
    return found


def token_request_body(pod: Obj, audience: str, expiration: int) -> Obj:
    meta = pod["metadata"]
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [audience] if audience else [],
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        },
    }


def service_targets(
    services: list[Obj], slices: list[Obj], pod: Obj, own_ip: str
) -> list[podspec.ServiceTarget]:
    """Service DNS from the EndpointSlices the controller-manager maintains.

    A Service resolves to the first ready endpoint's address; its ports map to the
    endpoints' (named target ports are already resolved there). A Service that selects the
    starting pod itself resolves to that pod's own IP while no endpoint is ready.
    """
    meta = pod["metadata"]
    own_labels = meta.get("labels") or {}
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        svc_name = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc_name:
            by_service.setdefault((s["metadata"]["namespace"], svc_name), []).append(s)
    targets = []
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc.get("spec") or {}
        ip = None
        slice_ports: dict[str, int] = {}
        for s in by_service.get((ns, name), []):
            ready = [
                e
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
                and not (e.get("conditions") or {}).get("terminating")
            ]
            if ready and ip is None:
                ip = ready[0]["addresses"][0]
                slice_ports = {str(p.get("name") or ""): int(p["port"]) for p in s.get("ports") or []}
        ports = {}
        for port in spec.get("ports") or []:
            target = slice_ports.get(str(port.get("name") or ""))
            if target is None:
                raw = port.get("targetPort", port.get("port"))
                target = int(raw) if str(raw).isdigit() else int(port["port"])
            ports[int(port["port"])] = target
        sel = spec.get("selector") or {}
        selects_self = (
            bool(sel) and ns == meta["namespace"] and all(own_labels.get(k) == v for k, v in sel.items())
        )
        if ip is None and selects_self:
            ip = own_ip
        targets.append(podspec.ServiceTarget(ns, name, ports, ip))
    return targets


def service_env(cfg: NodeConfig) -> dict[str, str]:
    """KUBERNETES_SERVICE_* pointing at the API server's real address (no kube-proxy here)."""
    host, port = cfg.apiserver_host, str(cfg.apiserver_port)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }
