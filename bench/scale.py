"""Benchmark: what one manager does with thousands of workers and a million tasks.

One run measures, next to the targets of issue 17 (ratios hold on any machine; absolute
figures are for a 2-core one):

  idle          N simulated workers connected and no tasks: the manager's CPU, how fast it answers
  dispatch      tasks/s and calls/s with 10, 100, 1,000 and 5,000 simulated workers
                (kubevine.simworker: real worker sessions, instant tasks) against a real
                manager (state in memory); the manager's CPU per task; while it is saturated,
                how long it takes to answer a worker (probe round trip), ``status`` and
                ``/metrics``
  queue         10k, 100k and 1M command tasks queued (no workers) on a manager with its state
                in a Redis of the bench's own: the time one client takes to submit them (and
                until the manager holds them, and until they are durable), the manager's CPU
                and RSS per queued task, Redis memory per task
  restart       with 100k and 1M tasks in Redis: kill -9 the manager, start another on the same
                Redis and port, time from its process start to the first dispatch reaching a
                simulated worker (the lease has run out first: --lease-ttl 1)
  durable cost  bench/calls.py's calls (10,000 FunctionCalls, direct mode) and bench/commands.py's
                commands (2,000 x /bin/true) on 2 real workers x 1 core, state in memory and in
                Redis, alternated in the same run; the rates, and the manager's CPU per task
                (steadier than rates on a shared machine)
  serverless    fork-mode FunctionCalls and PythonTasks on 2 real workers x 1 core; the single
                call's round trip (p50, p99) on a quiet manager

``--quick`` (under 5 minutes) does the same at 10/100/1,000 workers and 100k tasks. The last
line of the output is one JSON object with the headline figures. Every process started here
is stopped when the bench ends, also when it fails. Not a test: it never fails because the
machine is slow.

    python bench/scale.py [--quick] [--only idle,dispatch,queue,durable,serverless] [--profile DIR]
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import redis

import kubevine
from kubevine import FunctionCall, Manager, Task, keys
from kubevine.admin import Admin
from kubevine.simworker import SimStats

sys.path.insert(0, str(Path(__file__).parent))
from calls import inc, kubevine_latency, kubevine_python_tasks
from scale_report import (
    DISPATCH_HEAD,
    _finite,
    dispatch_summary,
    print_dispatch_row,
    print_durable,
    print_idle_row,
    print_queue_row,
    queue_summary,
    verdict,
)

TOKEN = f"bench-scale-{uuid.uuid4().hex}"
PER_PROCESS = 1000  # simulated workers per simulator process


def noop(x: int) -> int:
    return x


# --------------------------------------------------------------------------- processes


class Procs:
    """Every process the bench starts; all are killed at exit, however it exits."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "KUBEVINE_TOKEN": TOKEN}
        atexit.register(self.kill_all)

    def start(
        self, args: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:  # run from the log's folder: `-m kubevine` is the installed one
            p = subprocess.Popen(
                list(args), env=env or self.env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent
            )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


PROCS = Procs()


def _on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: all stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """A redis-server of the bench's own: a free port, its own folder, no persistence."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
        self.proc = PROCS.start([*args, "--save", "", "--appendonly", "no"], self.dir / "redis.log")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.r = redis.Redis.from_url(self.url, socket_timeout=120)
        wait_until(self._ping, 20, "redis-server")

    def _ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def used_memory(self) -> int:
        return int(self.r.info("memory")["used_memory"])

    def stop(self) -> None:
        self.r.close()
        PROCS.stop(self.proc)


class ManagerProc:
    """``kubevine manager`` on 127.0.0.1 as a process of its own, watched with psutil."""

    def __init__(
        self, work: Path, *, name: str, redis_url: str | None = None, port: int = 0, metrics: bool = False
    ) -> None:
        self.work, self.name, self.redis_url, self.port, self.metrics = work, name, redis_url, port, metrics
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.metrics_url: str | None = None

    def start(self, *extra: str) -> ManagerProc:
        self.work.mkdir(parents=True, exist_ok=True)
        addr = self.work / "address"
        addr.unlink(missing_ok=True)
        args = [sys.executable, "-m", "kubevine", "--log-level", "WARNING", "manager", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--name", self.name, "--workdir", str(self.work)]
        args += ["--lease-ttl", "1", *extra]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        if self.metrics:
            args += ["--metrics-port", "0"]
        self.proc = p = PROCS.start(args, self.work / "manager.log")
        wait_until(lambda: addr.exists() or p.poll() is not None, 600, "the manager serving")
        if p.poll() is not None:
            raise RuntimeError(f"the manager exited: {(self.work / 'manager.log').read_text()[-2000:]}")
        self.address = addr.read_text().strip()
        self.port = int(self.address.rsplit(":", 1)[1])
        if self.metrics:
            maddr = self.work / "metrics-address"
            wait_until(maddr.exists, 30, "the metrics address")
            self.metrics_url = f"http://{maddr.read_text().strip()}/metrics"
        self.ps = psutil.Process(p.pid)
        return self

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        PROCS.stop(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc)

    def txlog(self) -> list[str]:
        try:
            return (self.work / "transactions.log").read_text().splitlines()
        except OSError:
            return []


class Fleet:
    """Simulated workers in a few ``python -m kubevine.simworker`` processes."""

    def __init__(
        self,
        work: Path,
        address: str,
        workers: int,
        *,
        prefix: str,
        duration: str = "0",
        probe_every: float = 0.2,
        probers: int = 2,
        cores: float = 1,
    ) -> None:
        self.work, self.address, self.workers, self.prefix = work, address, workers, prefix
        self.duration, self.probe_every, self.probers = duration, probe_every, probers
        self.cores = cores
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []
        self.started = 0.0

    def start(self) -> Fleet:
        n = max(1, math.ceil(self.workers / PER_PROCESS))
        self.started = time.time()
        left = self.workers
        for i in range(n):
            count = math.ceil(left / (n - i))
            left -= count
            f = self.work / f"{self.prefix}-{i}.json"
            f.unlink(missing_ok=True)
            self.files.append(f)
            args = [sys.executable, "-m", "kubevine.simworker", self.address, "--workers", str(count)]
            args += ["--prefix", f"{self.prefix}{i}", "--duration", self.duration, "--stats", str(f)]
            args += ["--probe-every", str(self.probe_every), "--probers", str(self.probers)]
            args += ["--cores", str(self.cores)]
            self.procs.append(PROCS.start(args, self.work / f"{self.prefix}-{i}.log"))
        return self

    def stats(self) -> list[SimStats]:
        out = []
        for f in self.files:
            try:
                out.append(SimStats.from_json(f.read_text()))
            except (OSError, ValueError):
                out.append(SimStats())
        return out

    def registered(self) -> int:
        return sum(s.registered for s in self.stats())

    def assigned(self) -> int:
        return sum(s.tasks + s.calls for s in self.stats())

    def first_dispatch(self) -> float | None:
        firsts = [s.first_dispatch for s in self.stats() if s.first_dispatch is not None]
        return min(firsts) if firsts else None

    def stop(self) -> list[SimStats]:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            PROCS.stop(p, grace=30)
        return self.stats()


# --------------------------------------------------------------------------- figures


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def merged(stats: Sequence[SimStats]) -> list[tuple[float, int]]:
    """(time, tasks assigned so far, all simulators together), on the union of their samples."""
    times = sorted({t for s in stats for t, _, _ in s.samples})
    out = []
    idx = [0] * len(stats)
    for t in times:
        total = 0
        for k, s in enumerate(stats):
            while idx[k] + 1 < len(s.samples) and s.samples[idx[k] + 1][0] <= t:
                idx[k] += 1
            if s.samples and s.samples[idx[k]][0] <= t:
                total += s.samples[idx[k]][1]
        out.append((t, total))
    return out


def window_rate(series: list[tuple[float, int]], total: int, after: float) -> float:
    """Tasks/s between 10 % and 90 % of ``total`` assigned (not before ``after``: all registered)."""
    lo = next(((t, n) for t, n in series if n >= 0.1 * total and t >= after), None)
    hi = next(((t, n) for t, n in series if n >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return float("nan")
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


@dataclass
class Latencies:
    status: list[float] = field(default_factory=list)
    metrics: list[float] = field(default_factory=list)


@contextmanager
def sampling(m: ManagerProc, every: float = 0.5) -> Iterator[Latencies]:
    """Time ``status`` (a new admin session each time, as ``kubevine status``) and ``/metrics``
    over and over while the body runs."""
    lat = Latencies()
    stop = threading.Event()

    def loop() -> None:
        admin = Admin(m.address, TOKEN, timeout=60)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                admin.status()
                lat.status.append(time.perf_counter() - t0)
            except Exception:  # a timeout is a figure too
                lat.status.append(time.perf_counter() - t0)
            if m.metrics_url:
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(m.metrics_url, timeout=60) as r:
                        r.read()
                except OSError:
                    pass
                lat.metrics.append(time.perf_counter() - t0)
            stop.wait(every)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield lat
    finally:
        stop.set()
        th.join(120)


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.1f}/{b:.1f}/{c:.1f}"


# --------------------------------------------------------------------------- dispatch


def dispatch(work: Path, workers: int, kind: str, n: int, profile: Path | None) -> dict[str, Any]:
    """``n`` instant tasks (or calls) queued first, then ``workers`` simulated workers connect;
    the rate is read from the simulators' own clocks between 10 % and 90 % of the tasks."""
    tag = f"{kind}-{workers}"
    m = ManagerProc(work / f"m-{tag}", name=f"scale-{tag}", metrics=True).start()
    fleet: Fleet | None = None
    lone: Fleet | None = None
    spy = None
    try:
        with Manager(m.address, token=TOKEN) as c:
            if kind == "calls":
                c.install_library(c.create_library_from_functions("noop", noop, exec_mode="direct"))
            for i in range(n):
                c.submit(FunctionCall("noop", "noop", i) if kind == "calls" else Task("true"))
            wait_until(lambda: sum(c.status().tasks.values()) >= n, 600, f"{n} tasks held", every=0.2)
            cpu0 = m.cpu()
            spy = start_profile(profile, m, tag)
            load_at = load()
            fleet = Fleet(work / f"sim-{tag}", m.address, workers, prefix=f"w{workers}{kind[0]}").start()
            lone = lone_prober(work / f"probe-{tag}", m.address, f"p{workers}{kind[0]}")
            t0 = time.time()
            with sampling(m) as lat:
                done = 0
                while done < n and c.wait(120) is not None:
                    done += 1
                t_end = time.time()
            cpu1 = m.cpu()
        stop_profile(spy, tag)
        spy = None
        stats = fleet.stop()
        fleet = None
        lone_rtts = [x for s in lone.stop() for x in s.probe_rtts]
        lone = None
    finally:
        stop_profile(spy, tag)
        for f in (fleet, lone):
            if f is not None:
                f.stop()
        m.stop()
    series = merged(stats)
    # (after the manager stopped: its transactions log is complete). Only during the run:
    # simulators that take a while to exit afterwards go silent while the manager still runs
    lost = sum(
        1
        for ln in m.txlog()
        if " WORKER " in ln and " disconnected " in ln and int(ln.split(" ", 1)[0]) / 1e6 <= t_end
    )
    registered = [s.all_registered for s in stats]
    all_in = max((r or t0 for r in registered), default=t0)
    rtts = [x for s in stats for x in s.probe_rtts]
    first = min((s.first_dispatch for s in stats if s.first_dispatch), default=t0)
    return {
        "workers": workers,
        "kind": kind,
        "n": n,
        "done": done,
        "rate": window_rate(series, n, all_in),
        "rate_e2e": done / max(1e-9, t_end - first),
        "cpu_us_per_task": 1e6 * (cpu1 - cpu0) / max(1, done),
        "probe_p50": pct(rtts, 0.5),
        "probe_max": max(rtts, default=float("nan")),
        "lone_p50": pct(lone_rtts, 0.5),
        "lone_max": max(lone_rtts, default=float("nan")),
        "status_p50": pct(lat.status, 0.5),
        "status_max": max(lat.status, default=float("nan")),
        "metrics_p50": pct(lat.metrics, 0.5),
        "metrics_max": max(lat.metrics, default=float("nan")),
        "libraries": sum(s.libraries_ready for s in stats),
        "register_s": all_in - t0 if all(registered) else float("nan"),  # nan: never all registered
        "lost": lost,  # workers the manager declared lost (none left on their own)
        "load": load_at,
    }


def lone_prober(work: Path, address: str, prefix: str) -> Fleet:
    """One more simulated worker (with no cores: it takes no tasks) in a process of its own that
    probes every 0.1 s: how long the manager takes to answer a worker whose own loop is not also
    serving 999 others (a real worker's case). The probers inside the fleet's processes also
    count their simulator's backlog, which on this 2-core machine is often the larger part."""
    return Fleet(work, address, 1, prefix=prefix, probe_every=0.1, probers=1, cores=0).start()


def idle(work: Path, workers: int) -> dict[str, Any]:
    """``workers`` simulated workers connected, no tasks: what the manager spends on keeping
    them (heartbeats both ways, status snapshots), and how fast it answers."""
    m = ManagerProc(work / f"m-idle-{workers}", name=f"scale-idle-{workers}", metrics=True).start()
    fleet = Fleet(work / f"sim-idle-{workers}", m.address, workers, prefix=f"i{workers}", probe_every=0.1)
    try:
        fleet.start()
        wait_until(lambda: fleet.registered() >= workers, 600, f"{workers} workers registered", every=0.2)
        t_reg = time.time() - fleet.started
        time.sleep(2)
        c0, t0 = m.cpu(), time.time()
        with sampling(m, every=1.0) as lat:
            time.sleep(10)
        cpu = (m.cpu() - c0) / (time.time() - t0)
        stats = fleet.stop()
    finally:
        fleet.stop()
        m.stop()
    rtts = [x for s in stats for x in s.probe_rtts]
    return {
        "workers": workers,
        "register_s": t_reg,
        "cpu": cpu,
        "probe_p50": pct(rtts, 0.5),
        "probe_max": max(rtts, default=float("nan")),
        "status_p50": pct(lat.status, 0.5),
        "status_max": max(lat.status, default=float("nan")),
        "load": load(),
    }


# --------------------------------------------------------------------------- queue and restart


def queue(work: Path, rs: RedisServer, n: int, restart: bool, profile: Path | None) -> dict[str, Any]:
    name = f"scale-q{n}-{uuid.uuid4().hex[:6]}"
    used0 = rs.used_memory()
    m = ManagerProc(work / f"q{n}", name=name, redis_url=rs.url).start()
    out: dict[str, Any] = {"n": n, "load": load()}
    spy = None
    try:
        time.sleep(0.5)  # settled after start-up
        rss0, cpu0 = m.rss(), m.cpu()
        spy = start_profile(profile, m, f"submit-{n}")
        with Manager(m.address, token=TOKEN) as c:
            t0 = time.perf_counter()
            for _ in range(n):
                c.submit(Task("true"))
            out["submit_s"] = time.perf_counter() - t0
            # read what the manager publishes anyway: a status request costs the loop O(tasks)
            wait_until(lambda: published_held(rs, name) >= n, 1800, f"{n} held", every=0.5)
            out["held_s"] = time.perf_counter() - t0
            wait_until(lambda: stored(rs, name) >= n, 1800, f"{n} durable", every=0.5)
            out["durable_s"] = time.perf_counter() - t0
            out["cpu_us_per_task"] = 1e6 * (m.cpu() - cpu0) / n
            out["rss_per_task"] = (m.rss() - rss0) / n
            out["rss_mb"] = m.rss() / 1e6
            out["redis_per_task"] = (rs.used_memory() - used0) / n
        stop_profile(spy, f"submit-{n}")
        spy = None
        if restart:
            out.update(restart_after_kill(work, rs, m, name, n))
    finally:
        stop_profile(spy, f"submit-{n}")
        m.stop()
        rs.r.delete(*keys.all_keys(name))
    return out


def published_held(rs: RedisServer, name: str) -> int:
    """Tasks the manager holds, from the status it publishes to Redis every --stats-interval."""
    try:
        raw = rs.r.get(keys.stats(name))
    except redis.RedisError:  # a large group commit (one Lua call) keeps Redis busy for seconds
        return 0
    return sum(json.loads(raw)["tasks"].values()) if raw else 0


def stored(rs: RedisServer, name: str) -> int:
    """Task records in Redis (0 while Redis is busy applying a large commit)."""
    try:
        return int(rs.r.hlen(keys.records(name)))
    except redis.RedisError:
        return 0


def restart_after_kill(work: Path, rs: RedisServer, m: ManagerProc, name: str, n: int) -> dict[str, Any]:
    """kill -9 ``m``; once its lease is out, simulated workers wait at its address and a new
    manager starts on the same Redis: from its process start to the first dispatch they get."""
    m.kill9()
    wait_until(lambda: not rs.r.exists(keys.lease(name)), 30, "the dead manager's lease to run out")
    fleet = Fleet(work / f"sim-r{n}", f"127.0.0.1:{m.port}", 100, prefix=f"r{n}", probers=0).start()
    m2 = ManagerProc(work / f"q{n}-again", name=name, redis_url=rs.url, port=m.port)
    out: dict[str, Any] = {}
    try:
        t0 = time.time()
        m2.start()
        first = wait_until(fleet.first_dispatch, 600, "the first dispatch after the restart", every=0.05)
        out["restart_first_dispatch_s"] = first - t0
        # the dispatch cost with a deep queue: 100 workers, 5 s
        a0, c0, t1 = fleet.assigned(), m2.cpu(), time.time()
        time.sleep(5)
        a1, c1, t2 = fleet.assigned(), m2.cpu(), time.time()
        out["deep_rate"] = (a1 - a0) / (t2 - t1)
        out["deep_cpu_us_per_task"] = 1e6 * (c1 - c0) / max(1, a1 - a0)
        # a large store is loaded in slices while the manager serves: the whole load's time
        restored = wait_until(
            lambda: [ln for ln in m2.txlog() if " restored " in ln], 600, "the whole store loaded", every=0.2
        )
        out["restore_load_s"] = float(restored[0].rsplit("seconds=", 1)[1])
        out["restart_rss_mb"] = m2.rss() / 1e6
    finally:
        fleet.stop()
        m2.stop()
    return out


# --------------------------------------------------------------------------- real workers


def real_run(kind: str, n: int, redis_url: str | None = None) -> tuple[float, float]:
    """``n`` FunctionCalls of ``inc`` (``kind`` "direct" or "fork": the library's exec_mode) or
    ``n`` ``/bin/true`` commands ("commands") on 2 real workers x 1 core, as bench/calls.py and
    bench/commands.py run them: (per second, manager CPU microseconds per task). The rate moves
    with whatever else the machine runs; the manager's CPU per task much less."""
    with (
        kubevine.LocalCluster(workers=2, cores=1, redis=redis_url) as c,
        kubevine.Manager(c.address, token=c.token) as m,
    ):
        if kind != "commands":
            lib = m.create_library_from_functions("bench", inc, exec_mode=kind)
            lib.set_cores(1)
            m.install_library(lib)

        def task(i: int) -> Task:
            return Task("/bin/true") if kind == "commands" else FunctionCall("bench", "inc", i)

        for i in range(200):  # warm: libraries started, sandboxes made
            m.submit(task(i))
        while m.wait(60):
            pass
        assert c.manager is not None
        ps = psutil.Process(c.manager.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        t0 = time.perf_counter()
        for i in range(n):
            m.submit(task(i))
        total = 0
        while (t := m.wait(120)) is not None:
            assert t.successful(), (t.result, t.error)
            total += t.output if kind != "commands" else 1
        dt = time.perf_counter() - t0
        cpu = sum(ps.cpu_times()[:2]) - cpu0
    assert total == (n if kind == "commands" else sum(range(1, n + 1))), "wrong results"
    return n / dt, 1e6 * cpu / n


def durable_cost(rs: RedisServer, calls: int, commands: int, runs: int) -> dict[str, Any]:
    """The same benchmark with state in memory and in Redis, alternated run by run."""
    out: dict[str, Any] = {"load": load()}
    for label, kind, n in (("calls", "direct", calls), ("commands", "commands", commands)):
        mem: list[tuple[float, float]] = []
        red: list[tuple[float, float]] = []
        for _ in range(runs):
            mem.append(real_run(kind, n))
            red.append(real_run(kind, n, rs.url))
        out[label] = {
            "memory": statistics.median(r for r, _ in mem),
            "redis": statistics.median(r for r, _ in red),
            "cpu_memory": statistics.median(c for _, c in mem),
            "cpu_redis": statistics.median(c for _, c in red),
            "runs": (mem, red),
        }
    return out


# --------------------------------------------------------------------------- profiles


def start_profile(profile: Path | None, m: ManagerProc, tag: str) -> subprocess.Popen[bytes] | None:
    """py-spy on the manager (collapsed stacks, 200 Hz) until :func:`stop_profile`."""
    if profile is None or (
        shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists()
    ):
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    profile.mkdir(parents=True, exist_ok=True)
    out = profile / f"{tag}.txt"
    args = [spy, "record", "--pid", str(m.ps.pid), "--rate", "200", "--format", "raw", "-o", str(out)]
    return PROCS.start([*args, "--nonblocking"], profile / f"{tag}.log")


def stop_profile(spy: subprocess.Popen[bytes] | None, tag: str) -> None:
    if spy is None or spy.poll() is not None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
    PROCS.stop(spy)


# --------------------------------------------------------------------------- report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10/100/1,000 workers, 100k tasks: under 5 minutes")
    ap.add_argument("--only", default="idle,dispatch,queue,durable,serverless")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default by --quick)")
    ap.add_argument("--queued", default=None, help="comma-separated queue sizes (default by --quick)")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy the manager; collapsed stacks here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, simulator stats)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    only = set(a.only.split(","))
    quick = a.quick
    sizes = (
        [int(x) for x in a.workers.split(",")] if a.workers else [10, 100, 1000] + ([] if quick else [5000])
    )
    queued = (
        [int(x) for x in a.queued.split(",")]
        if a.queued
        else [10_000, 100_000] + ([] if quick else [1_000_000])
    )
    restarts = {100_000} if quick else {100_000, 1_000_000}
    work = Path(tempfile.mkdtemp(prefix="kubevine-scale-"))
    rs: RedisServer | None = None
    summary: dict[str, Any] = {"quick": quick, "cpus": os.cpu_count(), "load_at_start": load()}
    print(f"kubevine scale bench ({'quick' if quick else 'full'}); {os.cpu_count()} CPUs, load {load()}")
    t_start = time.time()
    try:
        if "idle" in only:
            print(
                "\nidle (simulated workers connected, no tasks)\n"
                f"  {'workers':>7} {'register s':>10} {'manager CPU':>11} {'probe p50/max ms':>17} "
                f"{'status p50/max s':>17} {'load':>14}"
            )
            irows = []
            for w in sizes:
                irows.append(idle(work, w))
                print_idle_row(irows[-1])
            big = max(irows, key=lambda r: r["workers"])
            summary["idle_cpu_at_max_workers"] = round(big["cpu"], 3)
            summary["register_s"] = {str(r["workers"]): round(r["register_s"], 2) for r in irows}
        if "dispatch" in only:
            print(DISPATCH_HEAD)
            rows = []
            for kind in ("tasks", "calls"):
                for w in sizes:
                    n = dispatch_size(w, quick)
                    prof = a.profile if w == max(sizes) else None
                    rows.append(dispatch(work, w, kind, n, prof))
                    print_dispatch_row(rows[-1])
            summary.update(dispatch_summary(rows))
        if "queue" in only:
            rs = RedisServer(work)
            qrows = []
            for n in queued:
                qrows.append(queue(work, rs, n, n in restarts, a.profile if n == max(queued) else None))
                print_queue_row(qrows[-1])
            summary.update(queue_summary(qrows))
        if "durable" in only:
            rs = rs or RedisServer(work)
            runs = 2 if quick else 3
            d = durable_cost(rs, 5000 if quick else 10_000, 1000 if quick else 2000, runs)
            print_durable(d, runs)
            for label in ("calls", "commands"):
                x = d[label]
                summary[f"redis_cost_{label}"] = round(1 - x["redis"] / x["memory"], 3)
                summary[f"redis_cpu_cost_{label}"] = round(x["cpu_redis"] / x["cpu_memory"] - 1, 3)
            summary["calls_per_s_memory"] = round(d["calls"]["memory"])
            summary["calls_per_s_redis"] = round(d["calls"]["redis"])
        if "serverless" in only:
            load_at = load()
            forks = [real_run("fork", 2000 if quick else 5000) for _ in range(1 if quick else 3)]
            fork = statistics.median(r for r, _ in forks)
            py = kubevine_python_tasks(500 if quick else 1000)
            p50, p99 = kubevine_latency(200 if quick else 500)
            print(f"\nserverless on 2 real workers x 1 core (load {load_at})")
            fork_cpu = statistics.median(c for _, c in forks)
            print(f"  fork-mode FunctionCalls   {fork:8.0f} calls/s   target >= 2,000: "
                  f"{verdict(fork >= 2000)}   (manager CPU {fork_cpu:.0f} us/call)")  # fmt: skip
            print(f"  PythonTasks               {py:8.0f} tasks/s   target >= 1,000: {verdict(py >= 1000)}")
            print(f"  single call round trip    p50 {p50:.2f} ms, p99 {p99:.2f} ms   target p50 <= 0.5 ms: "
                  f"{verdict(p50 <= 0.5)}")  # fmt: skip
            summary.update(
                fork_calls_per_s=round(fork), python_tasks_per_s=round(py), single_call_p50_ms=round(p50, 3)
            )
    finally:
        if rs is not None:
            rs.stop()
        PROCS.kill_all()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    summary["seconds"] = round(time.time() - t_start, 1)
    summary["load_at_end"] = load()
    print(json.dumps(_finite(summary)))


def dispatch_size(workers: int, quick: bool) -> int:
    """Enough tasks that the measured window is long beside the ramp (up to 4 per worker held)
    and comes after every worker registered (1,000 workers take about a second to)."""
    return max(10_000, 30 * workers) if quick else max(30_000, 6 * workers)


if __name__ == "__main__":
    main()
