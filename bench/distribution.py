"""Benchmark: one big file needed by many tasks on 4 workers over 2 nodes.

kubevine: the file is declared once; the client sends it to the manager once, one worker
per node receives it, the second node gets it from a peer, the second worker of each node
finds it in the node's shared cache. Reported: bytes the manager sent, bytes moved peer to
peer, arrivals per node, wall time.

Naive baseline, in the same run: every task ships its own copy of the file from the client
(a distinct buffer per task, as a job system without a data plane does); run at a smaller
size (--naive-mb) because it moves tasks x size bytes, and reported per task and scaled.

    python bench/distribution.py [--mb 200] [--tasks 200] [--naive-mb 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from kubevine import LocalCluster, Manager, Task, txformat

MB = 1 << 20


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
    return dt, moved(c)


def naive_run(root: Path, mb: int, tasks: int) -> tuple[float, dict[str, float]]:
    c = cluster(root / "naive")
    payload = os.urandom(mb * MB)
    with Manager(c.address, token=c.token) as m:
        t0 = time.perf_counter()
        for i in range(tasks):
            t = Task("wc -c < big")
            t.add_input(m.declare_buffer(payload + i.to_bytes(4, "big")), "big")  # a copy per task
            m.submit(t)
        while (t := m.wait(600)) is not None:
            assert t.successful(), (t.result, t.error)
        dt = time.perf_counter() - t0
    return dt, moved(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--naive-mb", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubevine-bench-") as tmp:
        root = Path(tmp)
        kv_t, kv = kubevine_run(root, a.mb, a.tasks)
        nv_t, nv = naive_run(root, a.naive_mb, a.tasks)
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


if __name__ == "__main__":
    main()
