"""Benchmark: TaskVine-style programs, unchanged but for the import, timed on kubevine.

Each workload is written the way TaskVine's own tests and examples write it — ``Manager(port)``
with no workers of its own, workers started against ``m.port`` with the two-argument command
line (``kubevine worker localhost PORT``, as ``vine_worker`` is), a ``submit``/``wait`` loop —
and timed from the first submit to the last result, on 2 workers x 1 core:

  commands        1,000 ``Task("true")``
  pythontasks     500 ``PythonTask(add, i, i)``
  calls-fork      2,000 ``FunctionCall`` to a library with ``exec_mode="fork"`` (TaskVine's default)
  calls-direct    2,000 ``FunctionCall`` with ``exec_mode="direct"``
  futures         a chain of 200 futures, each the argument of the next (``FuturesExecutor``)
  daskvine        a 2,000-node dask graph through ``DaskVine.get``

No TaskVine build is at hand here (Debian 12 has no cctools with TaskVine), so TaskVine's
column is the numbers measured on this kind of machine before (shared/TASKVINE.md): command
tasks ~310/s, FunctionCalls 80-110/s (fork) and 264-474/s (direct), PythonTasks 28-40/s,
DaskVine 96-126 nodes/s. Not a test: it never fails because the machine is slow.

    python bench/compat.py [--only NAME ...] [--runs 1]
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import kubevine as vine

#: TaskVine on this kind of machine (2 workers x 1 core), per second
TASKVINE = {
    "commands": "~310",
    "pythontasks": "28-40",
    "calls-fork": "80-110",
    "calls-direct": "264-474",
    "futures": "-",
    "daskvine": "96-126",
}


def add(a: int, b: int) -> int:
    return a + b


class Workers:
    """Two ``kubevine worker localhost PORT`` processes, as TaskVine's drivers start workers."""

    def __init__(self, m: vine.Manager, n: int = 2) -> None:
        self.dir = tempfile.mkdtemp(prefix="kubevine-compat-")
        self.procs = [
            subprocess.Popen(
                [*(sys.executable, "-m", "kubevine", "--log-level", "WARNING", "worker", "localhost"),
                 *(str(m.port), "--cores", "1", "--workdir", str(Path(self.dir) / f"w{i}"))],
                env={k: v for k, v in os.environ.items() if k != "KUBEVINE_TOKEN"},
            )
            for i in range(n)
        ]  # fmt: skip
        m.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


def drain(m: vine.Manager) -> int:
    n = 0
    while not m.empty():
        t = m.wait(60)
        assert t is not None and t.successful(), t and (t.result, t.error)
        n += 1
    return n


def run_commands(m: vine.Manager) -> tuple[int, float]:
    t0 = time.perf_counter()
    for _ in range(1000):
        m.submit(vine.Task("true"))
    return drain(m), time.perf_counter() - t0


def run_pythontasks(m: vine.Manager) -> tuple[int, float]:
    t0 = time.perf_counter()
    for i in range(500):
        m.submit(vine.PythonTask(add, i, i))
    return drain(m), time.perf_counter() - t0


def _calls(mode: str) -> Callable[[vine.Manager], tuple[int, float]]:
    def run(m: vine.Manager) -> tuple[int, float]:
        lib = m.create_library_from_functions(f"compat-{mode}", add, add_env=False, exec_mode=mode)
        lib.set_cores(1)
        m.install_library(lib)
        for i in range(20):  # the libraries start on both workers first
            m.submit(vine.FunctionCall(f"compat-{mode}", "add", i, i))
        drain(m)
        t0 = time.perf_counter()
        for i in range(2000):
            m.submit(vine.FunctionCall(f"compat-{mode}", "add", i, 1))
        return drain(m), time.perf_counter() - t0

    return run


def run_futures(m: vine.Manager) -> tuple[int, float]:
    ex = vine.FuturesExecutor(manager=m, factory=False)
    t0 = time.perf_counter()
    f = ex.submit(ex.future_task(add, 0, 1))
    for _ in range(199):
        f = ex.submit(ex.future_task(add, f, 1))
    assert f.result() == 200
    return 200, time.perf_counter() - t0


def run_daskvine(m: vine.Manager) -> tuple[int, float]:
    dsk: dict[str, object] = {"n-0": 0}
    for i in range(1, 2000):  # a chain of sums with a fan of leaves: 2,000 nodes
        dsk[f"n-{i}"] = (operator.add, f"n-{i - 1}", 1) if i % 2 else (add, f"n-{i - 1}", i)
    t0 = time.perf_counter()
    out = m.get(dsk, "n-1999", lazy_transfers=True)
    assert isinstance(out, int)
    return 2000, time.perf_counter() - t0


WORKLOADS: dict[str, Callable[[vine.Manager], tuple[int, float]]] = {
    "commands": run_commands,
    "pythontasks": run_pythontasks,
    "calls-fork": _calls("fork"),
    "calls-direct": _calls("direct"),
    "futures": run_futures,
    "daskvine": run_daskvine,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(WORKLOADS))
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'workload':<14}{'kubevine /s':>14}{'TaskVine /s':>14}")
    for name in args.only or WORKLOADS:
        rates = []
        for _ in range(args.runs):
            m = vine.DaskVine(port=0) if name == "daskvine" else vine.Manager(port=0)
            workers = Workers(m)
            try:
                n, seconds = WORKLOADS[name](m)
                rates.append(n / seconds)
            finally:
                workers.stop()
                m.close()
        print(f"{name:<14}{statistics.median(rates):>14.0f}{TASKVINE[name]:>14}")


if __name__ == "__main__":
    main()
