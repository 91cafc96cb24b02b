"""Benchmark: one big file needed by many tasks on 4 workers over 2 nodes.

kubevine: the file is declared once; the client sends it to the manager once, one worker
per node receives it, the second node gets it from a peer, the second worker of each node
finds it in the node's shared cache. Reported: bytes the manager sent, bytes moved peer to
peer, arrivals per node, wall time.

Naive baseline, in the same run: every task ships its own copy of the file from the client
(a distinct buffer per task, as a job system without a data plane does); run at a smaller
size (--naive-mb) because it moves tasks x size bytes, and reported per task and scaled.

Fan-out, in the same run: one file needed on --fanout-nodes nodes (a worker each), moved
with one transfer per source at a time (a tree: every copy that lands becomes a source) and
with --fanout-wide per source (a star from the first holder). Reported: manager egress,
peer transfers, the depth of the tree, and wall time.

    python bench/distribution.py [--mb 200] [--tasks 200] [--naive-mb 10]
                                 [--fanout-nodes 8] [--fanout-mb 100] [--fanout-wide 8]

On the real control plane (`--real-cluster`, as root; tests/realkube, docs/dev/real-cluster.md):
a cluster of its own (`--nodes` 3, each node's link limited to `--bandwidth` 1gbit each way by
tc), the chart installed with helm, and for each way of moving the file a VineWorkflow with one
worker per node (the manager on node-a). The client in the root namespace declares the file
and submits `--tasks` tasks needing it. Ways: a tree (each copy that lands serves 1 peer at a
time), a star (the first holder serves `--fanout-wide` at once) and no peer transfers (every
node fetches from the manager). Reported per way: wall time, manager egress, peer bytes,
arrivals per node, read from the manager's transactions log.

    sudo .venv/bin/python bench/distribution.py --real-cluster [--mb 200] [--tasks 200]
                                 [--nodes 3] [--bandwidth 1gbit] [--fanout-wide 8] [--encrypt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.testing import wait_for

MB = 1 << 20
REPO = Path(__file__).resolve().parents[1]


def cluster(root: Path) -> LocalCluster:
    c = LocalCluster(workers=0, workdir=root / "cluster", disk=4096).start()
    for node in ("a", "a", "b", "b"):
        c.add_worker(cache_dir=str(root / f"node-{node}"), node=node)
    c.wait_for_workers(4)
    return c


def moved(c: LocalCluster) -> dict[str, float]:
    c.stop()
    out = {"manager": 0.0, "peer": 0.0, "url": 0.0, "arrivals": 0.0}
    for e in txformat.read(c.workdir / "manager" / "transactions.log"):
        if e.kind == "TRANSFER" and e.event == "sent":
            out[e.get("source") or "manager"] += e.num("bytes")
            out["arrivals"] += 1
    return out


def kubevine_run(root: Path, mb: int, tasks: int) -> tuple[float, dict[str, float]]:
    big = root / "big.bin"
    big.write_bytes(os.urandom(mb * MB))
    c = cluster(root / "kv")
    try:
        with Manager(c.address, token=c.token) as m:
            f = m.declare_file(big)
            t0 = time.perf_counter()
            for _ in range(tasks):
                t = Task("wc -c < big")
                t.add_input(f, "big")
                m.submit(t)
            while (t := m.wait(600)) is not None:
                assert t.successful() and int(t.output) == mb * MB, (t.result, t.error)
            dt = time.perf_counter() - t0
    except BaseException:
        c.stop()  # never leave the cluster running behind a failed run
        raise
    return dt, moved(c)


def naive_run(root: Path, mb: int, tasks: int) -> tuple[float, dict[str, float]]:
    c = cluster(root / "naive")
    payload = os.urandom(mb * MB)
    try:
        with Manager(c.address, token=c.token) as m:
            t0 = time.perf_counter()
            for i in range(tasks):
                t = Task("wc -c < big")
                t.add_input(m.declare_buffer(payload + i.to_bytes(4, "big")), "big")  # a copy per task
                m.submit(t)
            while (t := m.wait(600)) is not None:
                assert t.successful(), (t.result, t.error)
            dt = time.perf_counter() - t0
    except BaseException:
        c.stop()  # never leave the cluster running behind a failed run
        raise
    return dt, moved(c)


def fanout_run(root: Path, mb: int, nodes: int, limit: int) -> tuple[float, dict[str, float]]:
    """Seconds until the file is on every node (one task per node, each needing it);
    ``limit`` transfers per source at once."""
    big = root / "fan.bin"
    if not big.exists():
        big.write_bytes(os.urandom(mb * MB))
    c = LocalCluster(workers=0, workdir=root / f"fan-{limit}", disk=4096, transfers_per_source=limit).start()
    for i in range(nodes):
        c.add_worker(cache_dir=str(root / f"fan-{limit}-node-{i}"), node=f"n{i}")
    c.wait_for_workers(nodes)
    try:
        with Manager(c.address, token=c.token) as m:
            f = m.declare_file(big)
            hold = Task("sleep 600")  # the first copy lands on one node, whose worker it then keeps busy
            hold.add_input(f, "big")
            m.submit(hold)
            wait_for(lambda: any(w.cached_files for w in m.status().workers), timeout=600, what="first copy")
            t0 = time.perf_counter()
            for _ in range(nodes - 1):  # one per other node: each worker has one core
                t = Task("sleep 600")
                t.add_input(f, "big")
                t.set_tag("fan")
                m.submit(t)
            # a task starts once its input has arrived: all running = the file is on every node
            wait_for(lambda: m.status().tasks.get("running") == nodes, 600, 0.05, "all nodes")
            dt = time.perf_counter() - t0
            m.cancel_all_by_tag("fan")
            m.cancel_by_task_id(hold.id or 0)
            for _ in range(nodes):
                m.wait(60)
    finally:
        c.stop()
    parent: dict[str, str] = {}
    out = {"manager": 0.0, "peer_transfers": 0.0, "depth": 0.0}
    for e in txformat.read(c.workdir / "manager" / "transactions.log"):
        if e.kind == "TRANSFER" and e.event == "sent":
            if e.get("source") == "manager":
                out["manager"] += e.num("bytes")
            else:
                out["peer_transfers"] += 1
                parent[e.get("dest") or ""] = e.get("peer") or ""
    for w in parent:
        d, x = 0, w
        while x in parent:
            d, x = d + 1, parent[x]
        out["depth"] = max(out["depth"], d)
    return dt, out


def real_cluster_runs(a: argparse.Namespace) -> None:
    """The runs on the real control plane (see the module doc)."""
    sys.path.insert(0, str(REPO))
    from tests.realkube.helpers import wait_for as wait
    from tests.realkube.vine import (
        Workflows,
        cluster_with_chart,
        pool_spec,
        privileged_namespace,
        spread,
        workflow,
    )

    started = time.perf_counter()
    rows: list[tuple[str, float, dict[str, Any]]] = []
    with cluster_with_chart("bench-distribution", "kvb", 90, a.nodes, a.bandwidth) as (cluster, _):
        print(f"cluster and chart up in {time.perf_counter() - started:.1f} s: {a.nodes} nodes, "
              f"links {a.bandwidth} each way")  # fmt: skip
        kube = privileged_namespace(cluster, "bench")
        wf = Workflows(kube)
        ways = (
            ("tree (1 per source)", {"worker-source-max-transfers": 1}),
            (f"star ({a.fanout_wide} per source)", {"worker-source-max-transfers": a.fanout_wide}),
            ("no peer transfers", {"peer-transfers": 0}),
        )
        with tempfile.TemporaryDirectory(prefix="kubevine-bench-") as tmp:
            for i, (label, tunes) in enumerate(ways):
                name = f"dist{i}"
                spec = pool_spec(min=a.nodes, max=a.nodes, idleTimeoutSeconds=600, affinity=spread(),
                                 memory=1024, disk=0)  # fmt: skip
                spec["manager"]["nodeSelector"] = {"kubernetes.io/hostname": "node-a"}
                spec["manager"]["resources"] = {"requests": {"cpu": "500m", "memory": "512Mi"},
                                                "limits": {"memory": "4Gi"}}  # fmt: skip
                spec["security"] = {"encrypt": a.encrypt}
                wf.apply(workflow(name, spec))
                wait(lambda: wf.status(name).get("workers", {}).get("connected") == a.nodes,  # noqa: B023
                     timeout=180, interval=0.5, what=f"{a.nodes} workers of {name}")  # fmt: skip
                nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in wf.workers(name)}
                big = Path(tmp) / f"big-{i}.bin"
                big.write_bytes(os.urandom(a.mb * MB))  # new content: nothing of it cached anywhere
                address, token = wf.manager_address(name), wf.token(name)
                with Manager(address, token=token, encrypt=a.encrypt) as m:
                    for knob, value in tunes.items():
                        m.tune(knob, value)
                    f = m.declare_file(big)
                    t0, wall0 = time.perf_counter(), time.time()
                    for _ in range(a.tasks):
                        # a little work each, so that every worker takes tasks and needs the file
                        t = Task("sleep 0.2; wc -c < big", cores=1)
                        t.add_input(f, "big")
                        m.submit(t)
                    while (t := m.wait(600)) is not None:
                        assert t.successful() and int(t.output) == a.mb * MB, (t.result, t.error)
                    dt = time.perf_counter() - t0
                (manager,) = [
                    p for p in kube.pods(f"kubevine.io/workflow={name},app.kubernetes.io/component=manager")
                ]
                logs = list(
                    (cluster.state_dir / "kubelet").glob(
                        f"pods/bench_{manager['metadata']['name']}_*/**/transactions.log"
                    )
                )
                assert logs, "the manager's transactions log was not found"
                out: dict[str, Any] = {"manager": 0.0, "peer": 0.0, "arrivals": {}, "on_all": 0.0}
                for e in txformat.read(logs[0]):
                    if e.kind == "TRANSFER" and e.event == "sent" and e.num("bytes") >= a.mb * MB:
                        out["on_all"] = max(out["on_all"], e.time - wall0)
                        out["manager" if (e.get("source") or "manager") == "manager" else "peer"] += e.num(
                            "bytes"
                        )
                        node = nodes.get(e.get("dest") or "", "?")
                        out["arrivals"][node] = out["arrivals"].get(node, 0) + 1
                rows.append((label, dt, out))
                kube.kubectl("delete", "vineworkflow", name, "--wait=true", "--timeout=120s")
                print(f"  {label}: {dt:.2f} s")
    size = a.mb * MB
    enc = "encrypted (CURVE)" if a.encrypt else "unencrypted"
    print(f"\n{a.mb} MB file, {a.tasks} tasks, {a.nodes} nodes with a 1-core worker each, manager on node-a, "
          f"links {a.bandwidth} each way (tc tbf), {enc}")  # fmt: skip
    for label, dt, r in rows:
        arrivals = " ".join(f"{n}={c}" for n, c in sorted(r["arrivals"].items()))
        egress, peer = r["manager"] / size, r["peer"] / size
        print(f"  {label:22s} all done {dt:6.2f} s, on every node after {r['on_all']:5.2f} s   "
              f"manager egress {egress:.2f} x   peer bytes {peer:.2f} x   arrivals: {arrivals}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--naive-mb", type=int, default=10)
    ap.add_argument("--fanout-nodes", type=int, default=8)
    ap.add_argument("--fanout-mb", type=int, default=100)
    ap.add_argument("--fanout-wide", type=int, default=8)
    ap.add_argument("--real-cluster", action="store_true", help="on the real control plane (root)")
    ap.add_argument("--nodes", type=int, default=3, help="--real-cluster: nodes")
    ap.add_argument("--bandwidth", default="1gbit", help="--real-cluster: each node's link, each way")
    ap.add_argument("--encrypt", action="store_true", help="--real-cluster: the workflow encrypts")
    a = ap.parse_args()
    if a.real_cluster:
        real_cluster_runs(a)
        return
    with tempfile.TemporaryDirectory(prefix="kubevine-bench-") as tmp:
        root = Path(tmp)
        kv_t, kv = kubevine_run(root, a.mb, a.tasks)
        nv_t, nv = naive_run(root, a.naive_mb, a.tasks)
        tree_t, tree = fanout_run(root, a.fanout_mb, a.fanout_nodes, 1)
        star_t, star = fanout_run(root, a.fanout_mb, a.fanout_nodes, a.fanout_wide)
    size = a.mb * MB
    print(f"\n{a.mb} MB file, {a.tasks} tasks, 4 workers on 2 nodes")
    print(
        f"  kubevine: {kv_t:6.2f} s   manager sent {kv['manager'] / size:.2f} x file   "
        f"peers moved {kv['peer'] / size:.2f} x file   arrivals {kv['arrivals']:.0f} (2 nodes)"
    )
    scale = a.mb / a.naive_mb
    print(
        f"  naive ({a.naive_mb} MB copy per task): {nv_t:6.2f} s, manager sent {nv['manager'] / MB:.0f} MB "
        f"= {nv['manager'] / (a.naive_mb * MB):.0f} x file; at {a.mb} MB that is "
        f"{nv['manager'] * scale / MB / 1024:.1f} GB and ~{nv_t * scale:.0f} s"
    )
    print(
        f"  target: manager egress = 1 x file size ({'met' if round(kv['manager']) == size else 'NOT met'}); "
        f"per-node arrivals = 1 ({'met' if kv['arrivals'] == 2 else 'NOT met'})"
    )
    fsize = a.fanout_mb * MB
    n_more = a.fanout_nodes - 1
    print(f"\n{a.fanout_mb} MB file from one node to {n_more} more (a worker each): time until on all")
    runs = (("1 per source (tree)", tree_t, tree), (f"{a.fanout_wide} per source", star_t, star))
    for label, dt, r in runs:
        print(
            f"  {label:22s} {dt:6.2f} s   manager sent {r['manager'] / fsize:.2f} x file   "
            f"peer transfers {r['peer_transfers']:.0f}   tree depth {r['depth']:.0f}"
        )
    print(f"  tree / wide wall time: {tree_t / star_t:.2f}")


if __name__ == "__main__":
    main()
