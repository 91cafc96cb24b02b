"""Benchmark: kubevine as a dask scheduler against Dask distributed and dask's sync scheduler.

Same run, same machine, 2 workers x 1 core each:

  (1) a 10,000-node tree reduction (a plain dict graph, tiny nodes: scheduling overhead);
  (2) the Coffea MET histogram over N copies of a NanoAOD file with steps_per_file=5
      (I/O and Python per partition: what an analyst runs), then the same analysis again on
      the warm kubevine pool (libraries started, ROOT metadata kept).

Targets (issue 8): (1) >= 3,000 tasks/s; (2) <= 0.8 x Dask distributed's time; the warm
second run <= 0.5 x the cold one. Not a test: it prints numbers and ratios, and never fails
because the machine is slow.

    python bench/dask_graphs.py [--leaves 5000] [--files 50] [--steps-per-file 5]
        [--nanoaod PATH] [--no-sync]
"""

from __future__ import annotations

import argparse
import logging
import operator
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask

import kubevine
from kubevine.dask import last_stats

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_NANOAOD = SHARED / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def tree(n_leaves: int) -> tuple[dict[Any, Any], Any]:
    dsk: dict[Any, Any] = {("leaf", i): (operator.mul, i, 3) for i in range(n_leaves)}
    level = list(dsk)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level), 2):
            k = (f"sum-{depth}", j // 2)
            pair = level[j : j + 2]
            dsk[k] = (operator.add, *pair) if len(pair) == 2 else (operator.pos, *pair)
            nxt.append(k)
        level = nxt
    return dsk, level[0]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def met_histogram(files: list[str], steps: int) -> Any:
    import hist.dask as hda
    from coffea.nanoevents import NanoEventsFactory

    events = NanoEventsFactory.from_root(
        {f: "Events" for f in files}, mode="dask", steps_per_file=steps
    ).events()
    h = hda.Hist.new.Reg(100, 0, 200, name="met", label="$E_{T}^{miss}$ [GeV]").Double()
    return h.fill(events.MET.pt)


def distributed_client() -> Any:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    )
    return cluster, Client(cluster)


def bench_tree(n_leaves: int, sync: bool) -> None:
    dsk, root = tree(n_leaves)
    n = len(dsk)
    expected = dask.get(dsk, root)
    print(f"\n(1) tree reduction: {n:,} nodes")
    rows: list[tuple[str, float]] = []
    with kubevine.LocalCluster(workers=2, cores=1) as c, kubevine.Manager(c.address, token=c.token) as m:
        cold, got = timed(lambda: m.get(dsk, root))
        assert got == expected
        stats = last_stats(m)
        warm, got = timed(lambda: m.get(dsk, root))
        assert got == expected
        rows += [("kubevine (library starting)", cold), ("kubevine (warm library)", warm)]
        if stats is not None:
            kb = stats.graph_bytes / 1e3
            print(f"    kubevine: {stats.calls} calls, graph {kb:.0f} KB sent once per worker")
    cluster, client = distributed_client()
    with cluster, client:
        client.get(*tree(8))  # workers up and warm
        dist, got = timed(lambda: client.get(dsk, root))
        assert got == expected
    rows.append(("dask distributed 2x1", dist))
    if sync:
        rows.append(("dask sync", timed(lambda: dask.get(dsk, root))[0]))
    for name, seconds in rows:
        print(f"    {name:30s} {seconds:7.2f} s  {n / seconds:9,.0f} tasks/s")
    print(f"    kubevine warm / distributed time: {warm / dist:.2f}   (target: >= 3,000 tasks/s)")


def bench_coffea(source: Path, n_files: int, steps: int, sync: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="kubevine-bench-") as tmp:
        files = []
        for i in range(n_files):
            dest = Path(tmp) / f"nano-{i:03d}.root"
            shutil.copyfile(source, dest)
            files.append(str(dest))
        h = met_histogram(files, steps)
        nodes = len(h.__dask_graph__())
        print(f"\n(2) Coffea MET histogram: {n_files} files x {steps} steps")
        print(f"    {nodes} nodes before dask's optimisation")
        with kubevine.LocalCluster(workers=2, cores=1) as c, kubevine.Manager(c.address, token=c.token) as m:
            cold, ours = timed(lambda: dask.compute(h, scheduler=m.get)[0])
            stats = last_stats(m)
            h2 = met_histogram(files, steps)  # an analyst re-running the cell
            warm, ours2 = timed(lambda: dask.compute(h2, scheduler=m.get)[0])
        assert ours == ours2
        if stats is not None:
            print(f"    kubevine: {stats.nodes} nodes in {stats.calls} calls after dask's optimisation")
        cluster, client = distributed_client()
        with cluster, client:
            client.get(*tree(8))
            dist, theirs = timed(lambda: dask.compute(h, scheduler=client.get)[0])
        assert ours == theirs, "kubevine and Dask distributed disagree"
        rows = [("kubevine cold", cold), ("kubevine warm (second run)", warm), ("dask distributed 2x1", dist)]
        if sync:
            t, expected = timed(lambda: dask.compute(h, scheduler="sync")[0])
            assert ours == expected, "kubevine and the sync scheduler disagree"
            rows.append(("dask sync", t))
        for name, seconds in rows:
            print(f"    {name:30s} {seconds:7.2f} s")
        print(f"    kubevine cold / distributed: {cold / dist:.2f}   (target <= 0.8)")
        print(f"    kubevine warm / cold:        {warm / cold:.2f}   (target <= 0.5)")
        print(f"    entries: {ours.sum(flow=True):.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leaves", type=int, default=5000, help="tree leaves (nodes = about 2x)")
    ap.add_argument("--files", type=int, default=50, help="copies of the NanoAOD file")
    ap.add_argument("--steps-per-file", type=int, default=5)
    ap.add_argument("--nanoaod", type=Path, default=DEFAULT_NANOAOD)
    ap.add_argument("--no-sync", action="store_true", help="skip dask's (slow) sync scheduler")
    ap.add_argument("--only", choices=["tree", "coffea"], default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # NanoAOD schema notes
    if args.only in (None, "tree"):
        bench_tree(args.leaves, not args.no_sync)
    if args.only in (None, "coffea"):
        bench_coffea(args.nanoaod, args.files, args.steps_per_file, not args.no_sync)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
