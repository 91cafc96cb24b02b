"""Node network namespaces on a bridge, with iproute2 (`ip`, `tc`).

Layout for a cluster named `kv` with node network 10.77.0.0/16 and pod network 10.78.0.0/16:

    root namespace:  bridge kvbr (10.77.0.1/16; the API server listens here)
                     route 10.78.0.0/16 dev kvbr          (the test process reaches every pod)
    node i:          namespace kv-<node>, veth kvh<i> (root side, on the bridge) <-> eth0
                     eth0 10.77.0.(10+i)/16, forwarding on, proxy ARP for its pods
                     route 10.78.0.0/16 dev eth0 src 10.77.0.(10+i)   (pods of other nodes)
    pod 10.78.i.x:   namespace kv-<node>-p<x> (made by the node's kubelet), eth0 10.78.i.x/32,
                     default via 169.254.1.1 (answered by the node's side, link p<x>)

Pod IPs of every node are on one layer-2 segment: a node answers ARP for its pods' addresses
on its eth0 and forwards to them, so pod-to-pod traffic crosses the bridge with no router, no
NAT and no kube-proxy. Each pod has its own network namespace (its own ports and 127.0.0.1),
and its connections leave from its own address.
`tc` token-bucket filters on both ends of a veth limit the node's link.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from typing import Any


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    prefix: str = "kv"
    node_net: str = "10.77.0.0/16"
    pod_net: str = "10.78.0.0/16"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The bridge's address: the API server's, as nodes and pods reach it."""
        return str(ipaddress.ip_network(self.node_net)[1])

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.node_net).prefixlen

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def host_veth(self, index: int) -> str:
        return f"{self.prefix}h{index}"

    def node_ip(self, index: int) -> str:
        return str(ipaddress.ip_network(self.node_net)[10 + index])

    def pod_cidr(self, index: int) -> str:
        net = ipaddress.ip_network(self.pod_net)
        return str(list(net.subnets(new_prefix=24))[index])


def bridge_mac(cfg: NetworkConfig) -> str:
    """A fixed, locally administered MAC for the bridge, from its name."""
    digest = hashlib.sha256(cfg.bridge.encode()).digest()
    return "02:6b:76:" + ":".join(f"{b:02x}" for b in digest[:3])


def ensure_bridge(cfg: NetworkConfig) -> None:
    if run("ip", "link", "show", cfg.bridge, check=False).returncode != 0:
        # A bridge whose MAC is not set takes the lowest MAC of its ports, and changes it when
        # that port goes: the nodes' ARP entries for the API server then point nowhere until
        # they expire (~30 s without heartbeats, seen as "all nodes NotReady"). Fix it.
        run("ip", "link", "add", cfg.bridge, "address", bridge_mac(cfg), "type", "bridge")
    addrs = run("ip", "-j", "addr", "show", "dev", cfg.bridge).stdout
    if cfg.gateway not in addrs:
        run("ip", "addr", "add", f"{cfg.gateway}/{cfg.prefixlen}", "dev", cfg.bridge)
    run("ip", "link", "set", cfg.bridge, "up")
    run("ip", "route", "replace", cfg.pod_net, "dev", cfg.bridge)


def namespace_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def add_node(cfg: NetworkConfig, index: int, node: str, bandwidth: str | None = None) -> None:
    """Create node `index`'s namespace, veth pair and addresses (replacing a stale one)."""
    ns = cfg.namespace(node)
    if namespace_exists(ns):
        remove_node(cfg, node)
    host = cfg.host_veth(index)
    run("ip", "link", "del", host, check=False)
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", host, "master", cfg.bridge, "up")
    ip = cfg.node_ip(index)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", ns, "addr", "add", f"{ip}/{cfg.prefixlen}", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    run("ip", "-n", ns, "route", "add", cfg.pod_net, "dev", "eth0", "src", ip)
    run("ip", "-n", ns, "route", "add", "default", "via", cfg.gateway, "dev", "eth0")
    if bandwidth:
        shape(cfg, index, node, bandwidth)


def _burst(rate: str) -> str:
    """A token-bucket burst of ~5 ms at `rate` (at least 16 KB), so shaping stays smooth."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for unit, factor in units.items():
        if rate.endswith(unit):
            bits = float(rate[: -len(unit)]) * factor
            break
    else:
        raise ValueError(f"rate must end in bit/kbit/mbit/gbit: {rate!r}")
    return str(max(16_000, int(bits / 8 * 0.005)))


def shape(cfg: NetworkConfig, index: int, node: str, rate: str) -> None:
    """Limit the node's link to `rate` each way (tbf on both ends of the veth)."""
    burst = _burst(rate)
    tbf = ["tbf", "rate", rate, "burst", burst, "latency", "50ms"]
    run("tc", "qdisc", "replace", "dev", cfg.host_veth(index), "root", *tbf)
    run("ip", "netns", "exec", cfg.namespace(node), "tc", "qdisc", "replace", "dev", "eth0", "root", *tbf)


def qdisc_stats(cfg: NetworkConfig, node: str) -> dict[str, Any]:
    """The root qdisc of the node's eth0 (what its pods send leaves through it), as `tc -s -j`
    reports it: kind ("tbf" when shaped), bytes, packets, drops, overlimits (packets the token
    bucket held back because it was empty)."""
    out = run("ip", "netns", "exec", cfg.namespace(node), "tc", "-s", "-j", "qdisc", "show", "dev", "eth0")
    roots = [q for q in json.loads(out.stdout or "[]") if q.get("root")]
    return dict(roots[0]) if roots else {}


def unshape(cfg: NetworkConfig, index: int, node: str) -> None:
    run("tc", "qdisc", "del", "dev", cfg.host_veth(index), "root", check=False)
    run("ip", "netns", "exec", cfg.namespace(node), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)


def namespace_pids(name: str) -> list[int]:
    result = run("ip", "netns", "pids", name, check=False)
    return [int(p) for p in result.stdout.split() if p.strip().isdigit()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def kill_namespace_processes(name: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in the namespace and wait until none is left alive."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in namespace_pids(name) if _alive(p)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in network namespace {name} survive SIGKILL")
        time.sleep(0.05)


def pod_namespaces(cfg: NetworkConfig, node: str) -> list[str]:
    """The network namespaces of the node's pods (`<node namespace>-p<n>`, made by its kubelet)."""
    prefix = cfg.namespace(node) + "-p"
    names = [
        line.split()[0]
        for line in run("ip", "netns", "list", check=False).stdout.splitlines()
        if line.split()
    ]
    return [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]


def remove_node(cfg: NetworkConfig, node: str) -> None:
    """Kill everything in the node's namespace and its pods' namespaces at once, then delete
    them (the veth pairs go with them)."""
    ns = cfg.namespace(node)
    pods = pod_namespaces(cfg, node)
    if not namespace_exists(ns) and not pods:
        return
    everything = [n for n in [ns, *pods] if namespace_exists(n)]
    for name in everything:  # SIGKILL first everywhere, so no pod outlives its node by a moment
        for pid in namespace_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for name in everything:
        kill_namespace_processes(name)
    for name in pods:
        run("ip", "netns", "del", name, check=False)
    if namespace_exists(ns):
        run("ip", "netns", "del", ns)


def teardown(cfg: NetworkConfig) -> None:
    """Remove every namespace of this cluster and its bridge."""
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{cfg.prefix}-") and namespace_exists(name):
            remove_node(cfg, name[len(cfg.prefix) + 1 :])
    for link in json.loads(run("ip", "-j", "link", "show").stdout or "[]"):
        ifname = str(link.get("ifname", ""))
        if ifname.startswith(f"{cfg.prefix}h") and ifname[len(cfg.prefix) + 1 :].isdigit():
            run("ip", "link", "del", ifname, check=False)
    if run("ip", "link", "show", cfg.bridge, check=False).returncode == 0:
        run("ip", "link", "del", cfg.bridge)


def leftovers(cfg: NetworkConfig) -> list[str]:
    """What of this cluster's network still exists (for `cluster-down` to prove it cleaned up)."""
    found = [
        line.split()[0]
        for line in run("ip", "netns", "list", check=False).stdout.splitlines()
        if line.split() and line.split()[0].startswith(f"{cfg.prefix}-")
    ]
    if run("ip", "link", "show", cfg.bridge, check=False).returncode == 0:
        found.append(cfg.bridge)
    return found
