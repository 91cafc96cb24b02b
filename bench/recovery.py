"""Benchmark: how fast a killed manager recovers, and what durable state costs.

Recovery: 10,000 tasks in Redis — 8 long tasks running on two 4-core workers, 9,992 waiting
for room — then the manager is SIGKILLed and a new one started on the same workflow
(``--lease-ttl 1``: the dead manager's lease is out a second later), with a free 4-core
worker waiting for it. Measured from the new manager's transactions log:
  start -> first dispatch   from its "started" line (lease taken, state not yet loaded) to a dispatch
  start -> re-attached      from "started" to both old workers reconnected with their 8 running tasks
and, for reference, process start -> serving (includes waiting out the lease).

Durability cost: the calls benchmark (``bench/calls.py``: 10,000 FunctionCalls on 2 workers
x 1 core) with state in memory and in Redis, run alternately, median of 3.

Targets: recovery < 2 s; durability costs <= 15 % throughput. Not a test.

    python bench/recovery.py [--tasks 10000] [--calls 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

import kubevine
from kubevine import Manager, Task

sys.path.insert(0, str(Path(__file__).parent))
from calls import kubevine_calls

TOKEN = "bench-recovery-token-0001"


def _start_manager(work: Path, url: str, name: str, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    addr = work / "m" / "address"
    addr.unlink(missing_ok=True)
    args = [sys.executable, "-m", "kubevine", "manager", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--name", name, "--redis", url, "--workdir", str(work / "m"), "--lease-ttl", "1"]
    env = {**os.environ, "KUBEVINE_TOKEN": TOKEN}
    with open(work / "manager.log", "ab") as log:
        p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    while not addr.exists():
        if p.poll() is not None:
            raise RuntimeError((work / "manager.log").read_text()[-2000:])
        time.sleep(0.01)
    return p, addr.read_text().strip()


def _worker(work: Path, address: str, i: int, cores: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "kubevine", "worker", address, "--cores", str(cores)]
    args += ["--workdir", str(work / f"w{i}")]
    env = {**os.environ, "KUBEVINE_TOKEN": TOKEN}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def recovery(n_tasks: int, url: str) -> dict[str, float]:
    name = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        try:
            first, address = _start_manager(work, url, name)
            procs.append(first)
            port = int(address.rsplit(":", 1)[1])
            procs += [_worker(work, address, i, 4) for i in range(2)]
            with Manager(address, token=TOKEN, client="bench") as m:
                for _ in range(8):
                    m.submit(Task("sleep 60", priority=1))
                while m.status().tasks.get("running", 0) < 8:
                    time.sleep(0.05)
                for _ in range(n_tasks - 8):
                    m.submit(Task("true", cores=4))  # wait for a whole worker: none is free
                while sum(m.status().tasks.values()) < n_tasks:
                    time.sleep(0.05)
                r = redis.Redis.from_url(url)
                while r.hlen(kubevine.keys.records(name)) < n_tasks:  # all of it durable
                    time.sleep(0.05)
                first.send_signal(signal.SIGKILL)
                first.wait()
                # a free worker (already running, as in a cluster): dispatch can happen at once
                procs.append(_worker(work, address, 9, 4))
                t_proc = time.time()
                second, _ = _start_manager(work, url, name, port)
                procs.append(second)
                t_serving = time.time()
                log = work / "m" / "transactions.log"
                loading = dispatch = reattached = None
                deadline = time.time() + 60
                while (dispatch is None or reattached is None) and time.time() < deadline:
                    time.sleep(0.05)
                    lines = [ln.split(" ", 2) for ln in log.read_text().splitlines()]
                    mine = [(int(ts) / 1e6, text) for ts, mid, text in lines if mid != lines[0][1]]
                    starts = [ts for ts, text in mine if text.startswith("MANAGER") and " started " in text]
                    loading = starts[0] if starts else None
                    dispatch = next((ts for ts, text in mine if " dispatched " in text), None)
                    back = [ts for ts, text in mine if text.startswith("WORKER") and "running=4" in text]
                    reattached = max(back) if len(back) >= 2 else None
                r.delete(*kubevine.keys.all_keys(name))
                r.close()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
    assert loading is not None and dispatch is not None and reattached is not None, "recovery not seen"
    return {
        "process start -> serving (lease wait incl.)": t_serving - t_proc,
        "start -> first dispatch": dispatch - loading,
        "start -> running tasks re-attached": reattached - loading,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    a = ap.parse_args()
    rec = [recovery(a.tasks, a.redis) for _ in range(a.runs)]
    mem, red = [], []
    for _ in range(a.runs):  # alternate, so load on the machine hits both alike
        mem.append(kubevine_calls(a.calls, None))
        red.append(kubevine_calls(a.calls, a.redis))
    print(f"\nrecovery with {a.tasks} tasks in Redis (8 running), median of {a.runs} runs")
    for k in rec[0]:
        vals = [r[k] for r in rec]
        print(f"  {k:44} {statistics.median(vals):6.3f} s   (runs: {', '.join(f'{v:.3f}' for v in vals)})")
    worst = max(r["start -> running tasks re-attached"] for r in rec)
    print(f"  target < 2 s: {'met' if worst < 2 else 'NOT met'} (worst {worst:.3f} s)")
    m, r_ = statistics.median(mem), statistics.median(red)
    print(f"\ncalls benchmark ({a.calls} FunctionCalls, 2 workers x 1 core), median of {a.runs}")
    print(f"  state in memory   {m:8.0f} calls/s   (runs: {', '.join(f'{v:.0f}' for v in mem)})")
    print(f"  state in Redis    {r_:8.0f} calls/s   (runs: {', '.join(f'{v:.0f}' for v in red)})")
    cost = 100 * (1 - r_ / m)
    print(f"  durability cost   {cost:5.1f} %   target <= 15 %: {'met' if cost <= 15 else 'NOT met'}")


if __name__ == "__main__":
    main()
