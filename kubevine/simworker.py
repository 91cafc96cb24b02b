"""Simulated workers: many real worker connections in one process, to measure one manager.

A manager's limits show with hundreds or thousands of workers; that many worker processes
(an interpreter, a sandbox folder and a transfer server each) would measure the machine, not
the manager. A :class:`Simulator` opens N worker connections to a real manager over ZeroMQ,
each kept by a :class:`kubevine.session.Session` as a real worker's is (the same hello with its
:class:`~kubevine.protocol.WorkerInfo`, heartbeats, reconnects and hellos to a new manager),
and answers the manager as a worker does: dispatched tasks are reported started, then
finished (at once, or after a duration drawn per task), within the worker's cores (a
library's calls within its slots); results are kept until acknowledged and reported again to
a new manager; kills drop attempts; libraries say ``ready`` when installed and answer calls
with a result frame encoded as a library's (:func:`kubevine.results.encode_ok`); inputs are
reported cached (with a transfer record from the source the manager staged) as soon as a task
needs them, forgotten files evicted. Nothing runs and no bytes move: a command succeeds with
empty stdout and empty outputs; a PythonTask or a call returns None — or, with
``run_functions``, the function's own value, computed here (tests check real results so).
Files are never served to peers (the simulated workers have no transfer address).

One thread polls every connection through one epoll set over the sockets' ZeroMQ file
descriptors, so a turn costs what arrived, not how many workers there are; timers
(heartbeats, task ends, probes) sit in one heap. For thousands of workers run a few such
processes: ``python -m kubevine.simworker HOST:PORT --workers N --stats FILE`` writes its
counters (:class:`SimStats`) to FILE as JSON while it runs.

A probe measures how long the manager takes to answer a worker while it is busy: a
:class:`~kubevine.protocol.FileRequest` for a file nobody has, which the manager's loop answers
(with an error) in the turn it reads it — the turn that would read a heartbeat.

Settings and counters live in :mod:`kubevine.simconfig`, the epoll set in :mod:`kubevine.simhub`.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, assert_never

import cloudpickle
import zmq

from kubevine import results
from kubevine.auth import Credentials, load_token
from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.protocol import (
    PROTOCOL_VERSION,
    TO_WORKER,
    Assignment,
    AttemptResult,
    CacheLevel,
    Dispatch,
    Drain,
    ErrorMsg,
    FileData,
    FileKind,
    FileRequest,
    FileSource,
    ForgetFiles,
    Goodbye,
    Hello,
    InstallLibrary,
    Kill,
    LibrarySpec,
    LibraryStatus,
    Outcome,
    OutputFile,
    PeerLost,
    RemoveLibrary,
    TaskKind,
    TaskRef,
    TransferRecord,
    UpdateAck,
    Welcome,
    WorkerInfo,
    WorkerUpdate,
    WorkerWork,
    frame,
    replace,
    value_output,
    walk_bindings,
)
from kubevine.resources import Resources
from kubevine.session import Session
from kubevine.simconfig import Duration, SimConfig, SimStats, instant, parse_duration
from kubevine.simhub import Hub, Watch, readable

__all__ = ["Duration", "SimConfig", "SimStats", "SimWorker", "Simulator", "instant", "main", "parse_duration"]

log = logging.getLogger(__name__)

CALL_START_DELAY = 0.005  # as a real worker: a call's start is reported once it has run this long
SAMPLE_EVERY = 0.05  # seconds between (time, assigned, results) samples
MAX_PROBES = 100_000  # probe round trips kept
PROBE_PREFIX = "kv-probe-"
PROBE_GIVE_UP = 60.0  # seconds after which an unanswered probe no longer holds the next one back
_EMPTY_SHA = hashlib.sha256(b"").hexdigest()
_NONE = results.encode_ok(None)

Key = tuple[TaskId, int]


@dataclass(slots=True, eq=False)
class _Run:
    """One attempt a simulated worker holds: queued, then running until ``ends``."""

    a: Assignment
    payload: bytes
    ends: float = float("inf")
    took: float = 0.0  # its drawn duration
    started: bool = False


@dataclass(slots=True, eq=False)
class _Lib:
    spec: LibrarySpec
    ready_at: float
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    context: Any = None
    ready: bool = False
    active: int = 0


class SimWorker:
    """One simulated worker: a session to the manager and what a worker holds."""

    def __init__(self, sim: Simulator, index: int) -> None:
        cfg = sim.config
        self.sim = sim
        self.id = WorkerId(f"{cfg.prefix}-{index}")
        self.index = index
        self.resources = Resources(cores=cfg.cores, memory=cfg.memory, disk=cfg.disk)
        self.socks: list[zmq.Socket[bytes]] = []
        self.session: Session[WorkerWork] = Session(
            sim.ctx,
            cfg.manager,
            self,
            TO_WORKER,
            poller=Watch(sim.hub, self),
            credentials=Credentials(cfg.token, cfg.encrypt),
            heartbeat_interval=cfg.heartbeat_interval,
            name=f"simulated worker {self.id}",
        )
        self.tick_at = float("inf")
        self.cached: set[CacheName] = set()
        self.libs: dict[str, _Lib] = {}
        self.queue: deque[_Run] = deque()  # accepted, not started (inputs "arrive" at once)
        self.queued: set[Key] = set()  # the same, by attempt
        self.running: dict[Key, _Run] = {}
        self.used_cores = 0.0
        self.started: list[TaskRef] = []
        self.finished: list[tuple[AttemptResult, list[bytes]]] = []
        self.unacked: dict[Key, tuple[AttemptResult, list[bytes]]] = {}
        self.new_cached: list[CacheName] = []
        self.evicted: list[CacheName] = []
        self.transfers: list[TransferRecord] = []
        self.probes: dict[str, float] = {}
        self.welcomed_once = False
        self.silent = False  # stopped talking (and listening): the manager should declare it lost
        self.gone = False

    # ------------------------------------------------------------------ SessionOwner

    def hello(self) -> Hello:
        info = WorkerInfo(
            worker_id=self.id,
            node=self.sim.config.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            resources=self.resources,
            cache_group=f"{self.sim.config.node}:{self.id}",
            cached=sorted(self.cached),
            running=self.held(),
            libraries=[n for n, lib in self.libs.items() if lib.ready],
        )
        return Hello(protocol=PROTOCOL_VERSION, token=self.sim.config.token, role="worker", worker=info)

    def welcomed(self, welcome: Welcome, *, again: bool, new_manager: bool) -> None:
        stats = self.sim.stats
        stats.welcomes += 1
        if not self.welcomed_once:
            self.welcomed_once = True
            self.sim.ever_welcomed += 1
            if self.sim.ever_welcomed == len(self.sim.workers):
                stats.all_registered = time.time()
        if self.unacked:  # results the manager may not have recorded: report them again
            self.finished.extend(self.unacked.values())
            self.unacked.clear()
            self.sim.dirty.add(self)

    def refused(self, reason: str) -> None:
        log.error("simulated worker %s refused: %s", self.id, reason)
        self.sim.stats.refused += 1
        self.gone = True

    def reset(self) -> None:
        self.probes.clear()  # asked of a connection that is gone

    def held(self) -> list[TaskRef]:
        keys = [(r.a.spec.id, r.a.attempt) for r in self.queue]
        keys += list(self.running) + list(self.unacked)
        return [TaskRef(task_id=t, attempt=a) for t, a in keys]

    # ------------------------------------------------------------------ messages in

    def read(self, now: float) -> None:
        ready = [s for s in self.socks if readable(s)]
        if not ready:
            return
        if self.silent:  # a hung node: what arrives is never looked at, not even by the session
            for s in ready:
                while True:
                    try:
                        s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            return
        for msg, frames in self.session.read({s: zmq.POLLIN for s in ready}):
            if not self.gone:
                self.on_message(msg, frames, now)

    def on_message(self, msg: WorkerWork, frames: list[bytes], now: float) -> None:
        stats = self.sim.stats
        match msg:
            case Dispatch():
                for ref in msg.acks:
                    self.unacked.pop((ref.task_id, ref.attempt), None)
                stats.acked_on_dispatch += len(msg.acks)
                stats.dispatches += 1
                stats.last_dispatch = time.time()
                if stats.first_dispatch is None:
                    stats.first_dispatch = stats.last_dispatch
                for a in msg.tasks:
                    if a.spec.kind == TaskKind.CALL:
                        stats.calls += 1
                    else:
                        stats.tasks += 1
                    self._accept(a, frame(frames, a.payload) or b"" if a.payload is not None else b"")
                self._start_runnable(now)
            case UpdateAck():
                for ref in msg.tasks:
                    self.unacked.pop((ref.task_id, ref.attempt), None)
                stats.acked_alone += len(msg.tasks)
            case Kill():
                for ref in msg.tasks:
                    self._kill((ref.task_id, ref.attempt))
            case InstallLibrary():
                self._install(msg.spec, frame(frames, msg.frame) or b"", now)
            case RemoveLibrary():
                if self.libs.pop(msg.name, None) is not None:
                    self.session.send(LibraryStatus(name=msg.name, state="gone"))
            case FileData():
                sent = self.probes.pop(msg.cache_name, None)
                if sent is not None and len(stats.probe_rtts) < MAX_PROBES:
                    stats.probe_rtts.append(now - sent)
            case ForgetFiles():
                for name in msg.cache_names:
                    if name in self.cached:
                        self.cached.discard(name)
                        self.evicted.append(name)
                        self.sim.dirty.add(self)
            case PeerLost():
                pass  # nothing is fetched from peers here
            case Drain():
                self.flush(now)
                self.session.send(Goodbye(reason="drained"))
                self.leave()
            case ErrorMsg():
                log.error("simulated worker %s: manager says %s: %s", self.id, msg.code, msg.message)
            case _:
                assert_never(msg)

    # ------------------------------------------------------------------ tasks

    def _accept(self, a: Assignment, payload: bytes) -> None:
        key = (a.spec.id, a.attempt)
        if key in self.running or key in self.queued:
            return  # dispatched twice
        self.queued.add(key)
        if a.spec.inputs:
            self._inputs_arrive(a)
        self.queue.append(_Run(a, payload))

    def _inputs_arrive(self, a: Assignment) -> None:
        """Every input is in the cache at once; what had to come from somewhere is reported
        as a transfer from the first source the manager staged (so its slot is freed)."""
        stages = {s.cache_name: s for s in a.stage}
        for b in walk_bindings(a.spec.inputs):
            name = b.cache_name
            if name is None or name in self.cached:
                continue
            self.cached.add(name)
            self.new_cached.append(name)
            if b.kind in (FileKind.UNTAR, FileKind.MINITASK):
                continue  # made here from its parts
            stage = stages.get(name)
            src = stage.sources[0] if stage is not None and stage.sources else FileSource(kind="manager")
            size = (stage.size if stage is not None else None) or b.size or 0
            rec = TransferRecord(cache_name=name, source=src.kind, source_worker=src.worker, bytes=size)
            self.transfers.append(rec)
        self.sim.dirty.add(self)

    def _start_runnable(self, now: float) -> None:
        if not self.queue:
            return
        kept: deque[_Run] = deque()
        while self.queue:
            run = self.queue.popleft()
            spec = run.a.spec
            if spec.kind == TaskKind.CALL:
                lib = self.libs.get(spec.library or "")
                if lib is None:
                    why = f"library {spec.library!r} is not running on this worker"
                    res = AttemptResult(
                        task_id=spec.id, attempt=run.a.attempt, outcome=Outcome.LIBRARY_ERROR, error=why
                    )
                    self._end(run, now, res, [])
                    continue
                if not lib.ready or lib.active >= lib.spec.slots:
                    kept.append(run)
                    continue
                lib.active += 1
            else:
                need = spec.resources.cores
                if self.used_cores + need > self.resources.cores + 1e-9 and self.used_cores > 0:
                    kept.append(run)
                    continue
                self.used_cores += need
            self._start(run, now)
        self.queue = kept

    def _start(self, run: _Run, now: float) -> None:
        a = run.a
        d = run.took = self.sim.config.duration(a)
        run.ends = now + d
        key = (a.spec.id, a.attempt)
        self.queued.discard(key)
        self.running[key] = run
        if a.spec.kind != TaskKind.CALL or d >= CALL_START_DELAY:
            self.started.append(TaskRef(task_id=a.spec.id, attempt=a.attempt))
            run.started = True
            self.sim.dirty.add(self)
        if d <= 0:
            self._finish(key, now)
        else:
            self.sim.timer(run.ends, self, key)

    def _finish(self, key: Key, now: float) -> None:
        """The attempt ``key`` has run its time: its result, as a worker would report it."""
        run = self.running.get(key)
        if run is None:
            return  # killed meanwhile
        a = run.a
        spec = a.spec
        wall = run.took
        began = time.time() - wall
        outputs: list[OutputFile] = []
        frames: list[bytes] = []
        if spec.kind == TaskKind.COMMAND:
            frames.append(b"")  # stdout
            outcome, exit_code = Outcome.SUCCESS, 0
            for b in spec.outputs:
                if b.kind == FileKind.TEMP and b.cache_name is not None:
                    outputs.append(
                        OutputFile(remote_name=b.remote_name, cache_name=b.cache_name, checksum=_EMPTY_SHA)
                    )
                    self._cache(b.cache_name)
                elif b.to_client:
                    frames.append(b"")
                    outputs.append(OutputFile(remote_name=b.remote_name, frame=len(frames) - 1))
                else:
                    outputs.append(OutputFile(remote_name=b.remote_name))
            res = AttemptResult(
                task_id=spec.id,
                attempt=a.attempt,
                outcome=outcome,
                exit_code=exit_code,
                output_frame=0,
                wall_time=wall,
                started=began,
                outputs=outputs,
            )
        else:
            ok, data, value = self._value(run)
            kept = value_output(spec.outputs) if ok else None
            res = AttemptResult(
                task_id=spec.id,
                attempt=a.attempt,
                outcome=Outcome.SUCCESS if ok else Outcome.EXCEPTION,
                exit_code=0 if spec.kind == TaskKind.PYTHON else None,
                output_frame=0,
                wall_time=wall,
                started=began,
            )
            if kept is not None and kept.cache_name is not None:  # the value stays here, as a temp
                raw: bytes = cloudpickle.dumps(value)
                out = OutputFile(
                    remote_name=kept.remote_name,
                    cache_name=kept.cache_name,
                    size=len(raw),
                    checksum=hashlib.sha256(raw).hexdigest(),
                )
                res = replace(res, output_frame=None, outputs=[out])
                self._cache(kept.cache_name)
            else:
                frames.append(data)
        self._end(run, now, res, frames)

    def _value(self, run: _Run) -> tuple[bool, bytes, Any]:
        """(ok, encoded result, value) of a PythonTask or call: None, unless run_functions."""
        spec = run.a.spec
        if not self.sim.config.run_functions:
            return True, _NONE, None
        try:
            if spec.kind == TaskKind.CALL:
                lib = self.libs[spec.library or ""]
                fn = lib.functions[spec.function or ""]
                results.set_context(lib.context)
                args, kwargs = cloudpickle.loads(run.payload)
            else:
                fn, args, kwargs, _ = cloudpickle.loads(run.payload)
            value = fn(*args, **kwargs)
            return True, results.encode_ok(value), value
        except Exception as e:  # the user's exception travels back, as from a worker
            return False, results.encode_error(results.user_frames(e)), None

    def _end(self, run: _Run, now: float, res: AttemptResult, frames: list[bytes]) -> None:
        a = run.a
        key = (a.spec.id, a.attempt)
        self.queued.discard(key)
        if self.running.pop(key, None) is not None:
            self._release(run)
        self.finished.append((res, frames))
        self.sim.stats.results += 1
        for b in a.spec.inputs:
            if b.cache == CacheLevel.TASK and b.cache_name in self.cached:
                self.cached.discard(b.cache_name)
                self.evicted.append(b.cache_name)
        self.sim.dirty.add(self)

    def _release(self, run: _Run) -> None:
        spec = run.a.spec
        if spec.kind == TaskKind.CALL:
            lib = self.libs.get(spec.library or "")
            if lib is not None:
                lib.active -= 1
        else:
            self.used_cores = max(0.0, self.used_cores - spec.resources.cores)

    def _cache(self, name: CacheName) -> None:
        if name not in self.cached:
            self.cached.add(name)
            self.new_cached.append(name)

    def _kill(self, key: Key) -> None:
        self.sim.stats.kills += 1
        run = self.running.pop(key, None)
        if run is not None:
            self._release(run)
        if key in self.queued:
            self.queued.discard(key)
            self.queue = deque(r for r in self.queue if (r.a.spec.id, r.a.attempt) != key)

    # ------------------------------------------------------------------ libraries

    def _install(self, spec: LibrarySpec, payload: bytes, now: float) -> None:
        old = self.libs.get(spec.name)
        if old is not None:
            if old.ready:
                self.session.send(LibraryStatus(name=spec.name, state="ready"))
            return
        lib = _Lib(spec, now + self.sim.config.library_start)
        if self.sim.config.run_functions:
            obj = cloudpickle.loads(payload)
            lib.functions = obj["functions"]
            if obj.get("context") is not None:
                setup, args, kwargs = obj["context"]
                lib.context = setup(*args, **kwargs)
        self.libs[spec.name] = lib
        if lib.ready_at <= now:
            self._library_ready(lib, now)
        else:
            self.sim.timer(lib.ready_at, self, spec.name)

    def _library_ready(self, lib: _Lib, now: float) -> None:
        if self.libs.get(lib.spec.name) is not lib:
            return
        lib.ready = True
        self.sim.stats.libraries_ready += 1
        self.session.send(LibraryStatus(name=lib.spec.name, state="ready"))
        self._start_runnable(now)

    # ------------------------------------------------------------------ time and reports

    def fire(self, what: Key | str, now: float) -> None:
        """A timer of this worker ran out: a task's end, or a library's start."""
        if self.silent or self.gone:
            return
        if isinstance(what, str):
            lib = self.libs.get(what)
            if lib is not None:
                self._library_ready(lib, now)
            return
        self._finish(what, now)
        self._start_runnable(now)

    def probe(self, now: float, n: int) -> None:
        """Ask the manager something it answers in the turn it reads it — once the previous
        probe was answered: like a heartbeat, one at a time, so a slow manager is measured,
        not a queue of this worker's own probes (sent every 0.1 s regardless, they piled up
        behind each other and the round trip grew with the run)."""
        if any(now - sent < PROBE_GIVE_UP for sent in self.probes.values()):
            return
        self.probes.clear()  # unanswered for PROBE_GIVE_UP: given up
        if self.session.registered and not self.silent and not self.gone:
            name = f"{PROBE_PREFIX}{self.index}-{n}"
            self.probes[name] = now
            self.session.send(FileRequest(cache_names=[CacheName(name)]))

    def flush(self, now: float) -> None:
        """Everything the manager has not heard, in one WorkerUpdate."""
        if not self.session.registered or self.silent or self.gone:
            return
        if not (self.started or self.finished or self.new_cached or self.evicted or self.transfers):
            return
        res: list[AttemptResult] = []
        frames: list[bytes] = []
        stats = self.sim.stats
        for r, fr in self.finished:
            res.append(_shifted(r, len(frames)))
            frames += fr
            self.unacked[(r.task_id, r.attempt)] = (r, fr)
        if res:
            stats.last_result = time.time()
        update = WorkerUpdate(
            started=self.started,
            results=res,
            cached=self.new_cached,
            evicted=self.evicted,
            transfers=self.transfers,
        )
        self.session.send(update, frames)
        self.started, self.finished, self.new_cached, self.evicted, self.transfers = [], [], [], [], []

    def leave(self) -> None:
        self.gone = True
        self.session.close()


class Simulator:
    """N simulated workers on one thread (see the module doc). Drive it with :meth:`step`,
    :meth:`run`, or :meth:`start` (a thread of its own) and :meth:`stop`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        cfg = config
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 4 * cfg.workers + 64)
        self.hub = Hub()
        self.stats = SimStats(workers=cfg.workers)
        self.dirty: set[SimWorker] = set()
        self._timers: list[tuple[float, int, SimWorker | None, Key | str]] = []
        self._seq = itertools.count()
        self.workers: list[SimWorker] = [SimWorker(self, i) for i in range(cfg.workers)]
        self.by_id = {w.id: w for w in self.workers}
        self._probe_n = itertools.count()
        self._next_sample = 0.0
        self._thread: threading.Thread | None = None
        self._running = False
        self.error: BaseException | None = None
        self.connected = False
        self.turns = 0  # steps taken (a test waits for one to pass)
        self.ever_welcomed = 0  # workers welcomed at least once

    # ------------------------------------------------------------------ control

    def connect(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            w.session.connect()
            self._schedule_tick(w, now)
        if self.config.probe_every > 0:
            self.timer(now + self.config.probe_every, None, "probe")
        self.connected = True

    def timer(self, when: float, w: SimWorker | None, what: Key | str) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), w, what))

    def silence(self, worker_id: str) -> None:
        """This worker stops talking and listening (a hung node): no heartbeats, no results.
        Safe to call from another thread."""
        self.by_id[WorkerId(worker_id)].silent = True

    @property
    def registered(self) -> int:
        return sum(1 for w in self.workers if w.session.registered and not w.gone)

    def snapshot(self) -> SimStats:
        self.stats.registered = self.registered
        return self.stats

    # ------------------------------------------------------------------ the loop

    def step(self, max_wait: float = 0.05) -> None:
        """One turn: read what arrived, end what is due, report, heartbeat."""
        if not self.connected:
            self.connect()
        self.turns += 1
        now = time.monotonic()
        wait = max_wait
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        ready = self.hub.poll(max(0.0, wait))
        now = time.monotonic()
        touched = set(ready)
        for w in ready:
            w.read(now)
        while self._timers and self._timers[0][0] <= now:
            _, _, owner, what = heapq.heappop(self._timers)
            if owner is None:
                self._probe(now)
            elif what == "tick":
                if owner.tick_at <= now:
                    owner.tick_at = float("inf")
                    if not owner.silent and not owner.gone:
                        owner.session.tick()
                        self._schedule_tick(owner, now)
                        touched.add(owner)
            else:
                owner.fire(what, now)
                touched.add(owner)
        for w in self.dirty:
            w.flush(now)
        touched |= self.dirty
        self.dirty = set()
        for w in touched:
            if not w.silent and not w.gone:
                self._schedule_tick(w, now)
        self.hub.recheck(touched)
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY
            s = self.stats
            s.samples.append((time.time(), s.tasks + s.calls, s.results))

    def _schedule_tick(self, w: SimWorker, now: float) -> None:
        due = now + w.session.due_in() + 0.001
        if due < w.tick_at:
            w.tick_at = due
            self.timer(due, w, "tick")

    def _probe(self, now: float) -> None:
        n = next(self._probe_n)
        for w in self.workers[: self.config.probers]:
            w.probe(now, n)
            self.hub.recheck({w})
        self.timer(now + self.config.probe_every, None, "probe")

    def run(self, until: Callable[[], bool] | None = None, seconds: float | None = None) -> None:
        """Turn until ``until()`` is true, ``seconds`` pass, or :meth:`stop`."""
        end = time.monotonic() + seconds if seconds is not None else float("inf")
        self._running = True
        while self._running and time.monotonic() < end and not (until is not None and until()):
            self.step()

    def start(self) -> Simulator:
        """Run on a thread of its own (it owns every socket from then on) until :meth:`stop`."""

        def main() -> None:
            try:
                self.run()
            except BaseException as e:  # kept for stop() to raise in the caller
                self.error = e
                log.exception("simulator failed")
            finally:
                self._close_sockets()

        self._running = True
        self._thread = threading.Thread(target=main, name="simworkers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        else:
            self._close_sockets()
        self.hub.close()
        self.ctx.term()
        if self.error is not None:
            raise RuntimeError("the simulator failed") from self.error

    def _close_sockets(self) -> None:
        for w in self.workers:
            w.session.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _shifted(res: AttemptResult, base: int) -> AttemptResult:
    """``res`` with its frame indexes moved past the ``base`` frames of earlier results."""
    if not base:
        return res
    outputs = [o if o.frame is None else replace(o, frame=o.frame + base) for o in res.outputs]
    out = None if res.output_frame is None else res.output_frame + base
    return replace(res, output_frame=out, outputs=outputs)


# ---------------------------------------------------------------------- a process of its own


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubevine.simworker", description=__doc__.splitlines()[0])
    ap.add_argument("manager", help="HOST:PORT")
    ap.add_argument("--token-file", default=None, help="else $KUBEVINE_TOKEN")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--cores", type=float, default=1)
    ap.add_argument("--prefix", default=f"sim{os.getpid()}")
    ap.add_argument("--duration", default="0", help="0, const:S, exp:MEAN or uniform:LO:HI")
    ap.add_argument("--heartbeat-interval", type=float, default=2.0)
    ap.add_argument("--probe-every", type=float, default=0.0)
    ap.add_argument("--probers", type=int, default=0)
    ap.add_argument("--stats", default=None, help="write counters here (JSON) while running")
    ap.add_argument("--stats-every", type=float, default=0.25)
    a = ap.parse_args(argv)
    token = load_token(a.token_file)
    if token is None:
        ap.error("no token: --token-file or $KUBEVINE_TOKEN")
    cfg = SimConfig(
        manager=a.manager,
        token=token,
        workers=a.workers,
        cores=a.cores,
        prefix=a.prefix,
        duration=parse_duration(a.duration),
        heartbeat_interval=a.heartbeat_interval,
        probe_every=a.probe_every,
        probers=a.probers,
    )
    sim = Simulator(cfg)
    stop = threading.Event()

    def on_signal(_s: int, _f: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = Path(a.stats) if a.stats else None
    next_write = 0.0
    try:
        sim.connect()
        while not stop.is_set():
            sim.step()
            if out is not None and time.monotonic() >= next_write:
                next_write = time.monotonic() + a.stats_every
                _write(out, sim.snapshot().to_json(series=False))
    finally:
        if out is not None:
            _write(out, sim.snapshot().to_json())
        sim.stop()
    return 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
