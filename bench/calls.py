"""Benchmark: 10,000 tiny function calls (x + 1) on 2 local workers x 1 core.

In the same run:
  kubevine   FunctionCalls in a warm library (direct mode), state in memory, in Redis, and encrypted
  dask       Dask distributed, LocalCluster(2 workers x 1 thread), client.map
  ray        ray.remote with num_cpus=2, if ray is installed (else a note)
  parsl      HighThroughputExecutor with 2 workers, if parsl is installed (else a note)
plus the single-call round trip (p50, p99) and 500 PythonTasks against the same in Dask.
Median of 3 runs. Not a test: it never fails because the machine is slow.

    python bench/calls.py [--calls 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import kubevine
from kubevine import FunctionCall, PythonTask


def inc(x: int) -> int:
    return x + 1


def kubevine_calls(n: int, redis: str | None, encrypt: bool = False) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        kubevine.LocalCluster(workers=2, cores=1, redis=redis, name=name, encrypt=encrypt) as c,
        kubevine.Manager(c.address, token=c.token, encrypt=encrypt) as m,
    ):
        lib = m.create_library_from_functions("bench", inc, exec_mode="direct")
        lib.set_cores(1)
        m.install_library(lib)
        for i in range(200):  # warm: libraries started on both workers
            m.submit(FunctionCall("bench", "inc", i))
        while m.wait(60):
            pass
        t0 = time.perf_counter()
        for i in range(n):
            m.submit(FunctionCall("bench", "inc", i))
        total = 0
        while (t := m.wait(60)) is not None:
            total += t.output
        dt = time.perf_counter() - t0
    assert total == sum(range(1, n + 1)), "wrong results"
    return n / dt


def kubevine_latency(samples: int = 300) -> tuple[float, float]:
    with kubevine.LocalCluster(workers=1, cores=1) as c, kubevine.Manager(c.address, token=c.token) as m:
        m.install_library(m.create_library_from_functions("lat", inc, exec_mode="direct"))
        for _ in range(20):
            m.submit(FunctionCall("lat", "inc", 1))
            m.wait(60)
        lat = []
        for i in range(samples):
            t0 = time.perf_counter()
            m.submit(FunctionCall("lat", "inc", i))
            t = m.wait(60)
            lat.append(time.perf_counter() - t0)
            assert t is not None and t.output == i + 1
    lat.sort()
    return lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3


def kubevine_python_tasks(n: int) -> float:
    with kubevine.LocalCluster(workers=2, cores=1) as c, kubevine.Manager(c.address, token=c.token) as m:
        t0 = time.perf_counter()
        for i in range(n):
            m.submit(PythonTask(inc, i))
        total = 0
        while (t := m.wait(120)) is not None:
            total += t.output
        dt = time.perf_counter() - t0
    assert total == sum(range(1, n + 1))
    return n / dt


def dask_calls(n: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        Client(lc) as client,
    ):
        client.gather(client.map(inc, range(200), pure=False))
        t0 = time.perf_counter()
        out = client.gather(client.map(inc, range(n), pure=False))
        dt = time.perf_counter() - t0
    assert sum(out) == sum(range(1, n + 1))
    return n / dt


def dask_python_tasks(n: int) -> float:
    """Dask's nearest to a PythonTask: a function run in a fresh interpreter per task."""
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    def fresh(i: int) -> int:
        cmd = [sys.executable, "-c", f"print({i} + 1)"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return int(out.stdout)

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        Client(lc) as client,
    ):
        t0 = time.perf_counter()
        out = client.gather(client.map(fresh, range(n), pure=False))
        dt = time.perf_counter() - t0
    assert sum(out) == sum(range(1, n + 1))
    return n / dt


def ray_calls(n: int) -> float | None:
    if importlib.util.find_spec("ray") is None:
        return None
    import ray  # type: ignore[import-not-found]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        f = ray.remote(inc)
        ray.get([f.remote(i) for i in range(200)])
        t0 = time.perf_counter()
        out = ray.get([f.remote(i) for i in range(n)])
        dt = time.perf_counter() - t0
    finally:
        ray.shutdown()
    assert sum(out) == sum(range(1, n + 1))
    return n / dt


def parsl_calls(n: int) -> float | None:
    if importlib.util.find_spec("parsl") is None:
        return None
    import parsl  # type: ignore[import-not-found]
    from parsl.config import Config  # type: ignore[import-not-found]
    from parsl.executors import HighThroughputExecutor  # type: ignore[import-not-found]

    # parsl starts its interchange as a console script: find it next to this interpreter
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    run_dir = tempfile.mkdtemp(prefix="parsl-bench-")
    parsl.load(Config(executors=[HighThroughputExecutor(max_workers_per_node=2)], run_dir=run_dir))
    try:
        f = parsl.python_app(inc)
        [x.result() for x in [f(i) for i in range(200)]]
        t0 = time.perf_counter()
        out = [x.result() for x in [f(i) for i in range(n)]]
        dt = time.perf_counter() - t0
    finally:
        parsl.dfk().cleanup()
    return n / dt if sum(out) == sum(range(1, n + 1)) else None


def median(runs: int, fn: Callable[[], float | None]) -> float | None:
    xs = [fn() for _ in range(runs)]
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python-tasks", type=int, default=500)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    a = ap.parse_args()
    rows: dict[str, float | None] = {
        "kubevine": median(a.runs, lambda: kubevine_calls(a.calls, None)),
        "kubevine+redis": median(a.runs, lambda: kubevine_calls(a.calls, a.redis)),
        "kubevine+encrypt": median(a.runs, lambda: kubevine_calls(a.calls, None, encrypt=True)),
        "dask": median(a.runs, lambda: dask_calls(a.calls)),
        "ray": median(a.runs, lambda: ray_calls(a.calls)),
        "parsl": median(a.runs, lambda: parsl_calls(a.calls)),
    }
    p50, p99 = kubevine_latency()
    py_kv = kubevine_python_tasks(a.python_tasks)
    py_dask = dask_python_tasks(a.python_tasks)
    print(f"\n{a.calls} calls of x + 1 on 2 workers x 1 core, median of {a.runs} runs")
    for k, v in rows.items():
        print(f"  {k:16} " + (f"{v:8.0f} calls/s" if v is not None else "   (not installed: skipped)"))
    kv = rows["kubevine"] or 0.0
    for k in ("dask", "ray", "parsl"):
        if rows[k]:
            print(f"  kubevine / {k:6} {kv / rows[k]:6.1f}x")  # type: ignore[operator]
    if rows["kubevine+redis"]:
        print(f"  redis cost         {100 * (1 - rows['kubevine+redis'] / kv):5.1f} %")
    if rows["kubevine+encrypt"]:
        cost = 100 * (1 - rows["kubevine+encrypt"] / kv)
        print(f"  encryption cost    {cost:5.1f} % (CURVE on every socket)")
    print(f"  target             >= 5000 calls/s: {'met' if kv >= 5000 else 'NOT met'}")
    print(f"single call round trip: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p50 <= 1 ms)")
    n = a.python_tasks
    print(f"{n} PythonTasks: kubevine {py_kv:.0f}/s, dask (an interpreter per task) {py_dask:.0f}/s")


if __name__ == "__main__":
    main()
