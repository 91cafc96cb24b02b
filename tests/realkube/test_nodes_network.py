"""The real scheduler places pods on process-kubelet nodes; pods reach each other over the bridge."""

from __future__ import annotations

import ipaddress
import socket
import textwrap
import time

from . import network
from .controlplane import Cluster
from .helpers import Kube, node_condition, wait_for
from .manifests import away_from, container, echo_deployment, job, service

NODES = {"node-a", "node-b", "node-c"}


def read_from(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as conn:
        return conn.recv(200)


def test_nodes_are_registered_ready_with_leases(kube: Kube, real_cluster: Cluster) -> None:
    nodes = kube.get("/api/v1/nodes")["items"]
    assert {n["metadata"]["name"] for n in nodes} >= NODES
    node_net = ipaddress.ip_network(real_cluster.settings.node_net)
    pod_net = ipaddress.ip_network(real_cluster.settings.pod_net)
    for node in nodes:
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).subnet_of(pod_net)  # type: ignore[arg-type]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal and ipaddress.ip_address(internal[0]) in node_net
        assert node_condition(node) == "True"
    for name in NODES:
        lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
        assert lease["spec"]["holderIdentity"] == name
        assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"


def test_pod_is_scheduled_gets_an_ip_of_its_node_and_reaches_a_pod_on_another_node(kube: Kube) -> None:
    kube.apply(echo_deployment("echo"), service("echo", 80, "echo"))
    [server] = wait_for(lambda: kube.running_pods("app=echo", 1), timeout=60, what="echo Ready")
    node_name = server["spec"]["nodeName"]
    assert node_name in NODES
    scheduled = wait_for(
        lambda: [e for e in kube.events(server["metadata"]["name"]) if e["reason"] == "Scheduled"],
        what="the scheduler's Scheduled event",
    )
    assert "default-scheduler" in (
        scheduled[0].get("reportingComponent") or scheduled[0]["source"]["component"]
    )
    node = kube.node(node_name)
    server_ip = server["status"]["podIP"]
    assert ipaddress.ip_address(server_ip) in ipaddress.ip_network(node["spec"]["podCIDR"])
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert server["status"]["hostIP"] == node_ip

    # From the test process (root namespace), over the bridge.
    assert read_from(server_ip, 8080).startswith(f"hi from {server_ip}".encode())

    # From a pod on another node, through the Service name (rewritten to the endpoint's pod IP;
    # the Service's port 80 to the endpoint's target port 8080).
    client_code = textwrap.dedent("""
        import os, socket
        host, port = os.environ["ECHO_ADDR"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as c:
            reply = c.recv(200).decode()
        print("reply:", reply, flush=True)
        assert reply.startswith("hi from " + os.environ["EXPECT"]), reply
    """)
    env = [{"name": "ECHO_ADDR", "value": f"echo.{kube.ns}.svc:80"}, {"name": "EXPECT", "value": server_ip}]
    kube.apply(job("client", container(client_code, env=env), affinity=away_from("echo")))
    wait_for(
        lambda: (kube.get(f"/apis/batch/v1/namespaces/{kube.ns}/jobs/client").get("status") or {}).get(
            "succeeded"
        ),
        timeout=60,
        what="the client Job to succeed",
    )
    [client] = kube.pods("app=client")
    assert client["spec"]["nodeName"] in NODES - {node_name}
    log = kube.log(client["metadata"]["name"], "main")
    # The connection came from the client pod's own address (its own network namespace; no
    # NAT, no kube-proxy on the way).
    client_ip = client["status"]["podIP"]
    assert client_ip != client["status"]["hostIP"]
    assert f"reply: hi from {server_ip} to {client_ip}" in log, log


SIZE = 4 << 20
RATE = 16e6 / 8  # 16mbit in bytes per second (tc's mbit is 10^6 bits)
BURST = int(network._burst("16mbit"))  # the bucket's depth in bytes


def test_node_link_is_shaped_by_a_token_bucket(kube: Kube, real_cluster: Cluster) -> None:
    """tc tbf on a node's veth limits what reaches its pods (netem is not available)."""
    sender = textwrap.dedent("""
        import os, socket
        s = socket.create_server((os.environ["POD_IP"], 9000))
        while True:
            conn, _ = s.accept()
            try:
                conn.sendall(b"x" * (4 << 20))
            except OSError:  # the readiness probe hangs up at once
                pass
            conn.close()
    """)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sender", "labels": {"app": "sender"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    container(
                        sender,
                        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        readinessProbe={"tcpSocket": {"port": 9000}, "periodSeconds": 1},
                    )
                ],
            },
        }
    )
    [pod] = wait_for(lambda: kube.running_pods("app=sender", 1), timeout=60, what="sender Ready")
    ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]

    def fetch_seconds() -> float:
        started = time.monotonic()
        got = 0
        with socket.create_connection((ip, 9000), timeout=30) as conn:
            while chunk := conn.recv(1 << 16):
                got += len(chunk)
        assert got == SIZE
        return time.monotonic() - started

    unshaped = fetch_seconds()
    assert real_cluster.link_stats(node).get("kind") != "tbf"
    real_cluster.shape_node(node, "16mbit")
    try:
        before = real_cluster.link_stats(node)
        shaped = fetch_seconds()
        after = real_cluster.link_stats(node)
    finally:
        real_cluster.shape_node(node, None)
    print(f"4 MiB: {unshaped:.3f} s unshaped, {shaped:.3f} s through 16 Mbit/s")
    # What a token bucket promises: in T seconds at most burst + rate * T bytes leave (every
    # payload byte is a byte on the wire, headers come on top), so 4 MiB cannot arrive sooner
    # than (4 MiB - burst) / rate, however idle or busy the machine is: ~2.09 s here.
    assert shaped >= (SIZE - BURST) / RATE, (shaped, before, after)
    # ... and the bucket did the holding back: its own counters saw the bytes go through and
    # packets wait for tokens.
    assert after["kind"] == "tbf"
    assert after["bytes"] - before["bytes"] >= SIZE, (before, after)
    assert after["overlimits"] > before["overlimits"], (before, after)
    # It lets the rate through, not much less (a loose bound: this much slower would be a bug).
    assert shaped < 3 * SIZE / RATE, shaped
    # Lifted: the qdisc is gone, not just relaxed (`unshaped` was measured without one).
    assert real_cluster.link_stats(node).get("kind") != "tbf"
