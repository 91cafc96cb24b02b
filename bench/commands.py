"""Benchmark: 2,000 `/bin/true` command tasks on 2 local workers x 1 core.

Runs, in the same process and on the same machine:
  floor        the same commands through a 2-process subprocess pool (no scheduler at all)
  dask         Dask distributed, LocalCluster(2 workers x 1 thread), one subprocess per task
  kubevine     a local manager (state in memory) and 2 workers
  kubevine+redis  the same with the manager's state in Redis (127.0.0.1:6379)
Each is run 3 times; the median tasks/s is reported with ratios. Not a test: it never fails
because the machine is slow.

    python bench/commands.py [--tasks 2000] [--runs 3] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import kubevine

CMD = "/bin/true"


def run_cmd(cmd: str) -> int:
    return subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL).returncode


def bench_floor(n: int) -> float:
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(run_cmd, [CMD] * 20))  # warm
        t0 = time.perf_counter()
        codes = list(ex.map(run_cmd, [CMD] * n, chunksize=16))
        dt = time.perf_counter() - t0
    assert codes == [0] * n
    return n / dt


def bench_dask(n: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        Client(lc) as client,
    ):
        client.gather(client.map(run_cmd, [CMD] * 20, pure=False))
        t0 = time.perf_counter()
        codes = client.gather(client.map(run_cmd, [CMD] * n, pure=False))
        dt = time.perf_counter() - t0
    assert codes == [0] * n
    return n / dt


def bench_kubevine(n: int, redis: str | None) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        kubevine.LocalCluster(workers=2, cores=1, redis=redis, name=name) as c,
        kubevine.Manager(c.address, token=c.token) as m,
    ):
        for _ in range(20):  # warm: workers connected, sandboxes made
            m.submit(kubevine.Task(CMD))
        while m.wait(30):
            pass
        t0 = time.perf_counter()
        for _ in range(n):
            m.submit(kubevine.Task(CMD))
        done = 0
        while (t := m.wait(60)) is not None:
            assert t.successful(), (t.result, t.error)
            done += 1
        dt = time.perf_counter() - t0
    if redis:
        import redis as r

        client = r.Redis.from_url(redis)
        client.delete(*kubevine.keys.all_keys(name))
    assert done == n
    return n / dt


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    xs = [fn() for _ in range(runs)]
    return statistics.median(xs), xs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--skip-dask", action="store_true")
    a = ap.parse_args()
    res: dict[str, tuple[float, list[float]]] = {}
    res["floor"] = median_of(a.runs, lambda: bench_floor(a.tasks))
    if not a.skip_dask:
        res["dask"] = median_of(a.runs, lambda: bench_dask(a.tasks))
    res["kubevine"] = median_of(a.runs, lambda: bench_kubevine(a.tasks, None))
    res["kubevine+redis"] = median_of(a.runs, lambda: bench_kubevine(a.tasks, a.redis))
    print(f"\n{a.tasks} x '{CMD}' on 2 workers x 1 core, median of {a.runs} runs")
    print(f"{'':16} {'tasks/s':>9}  runs")
    for k, (med, xs) in res.items():
        print(f"{k:16} {med:9.0f}  " + " ".join(f"{x:.0f}" for x in xs))
    kv, kvr, floor = res["kubevine"][0], res["kubevine+redis"][0], res["floor"][0]
    print()
    print(f"kubevine / floor          {kv / floor:5.2f}   (target >= 0.70)")
    print(f"kubevine+redis / floor    {kvr / floor:5.2f}")
    if "dask" in res:
        print(f"kubevine / dask           {kv / res['dask'][0]:5.2f}")
    print(f"redis cost                {100 * (1 - kvr / kv):5.1f} %  (target <= 15 %)")


if __name__ == "__main__":
    main()
