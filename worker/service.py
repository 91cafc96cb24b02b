"""The worker process: the I/O shell around :class:`~kubevine.worker.core.WorkerCore`.

One thread owns every socket and every task process. The loop polls the manager's socket
(through a :class:`~kubevine.session.Session`, which keeps the hello, heartbeats and
reconnects), a pidfd per running process and per library, the library sockets, the peer
transfer sockets and the fetcher's and deriver's wake pipes, so a finished task is noticed at
once with no thread hand-off. Whatever happened becomes an event for the core; the core's
instructions are carried out here: processes started in sandboxes, calls handed to libraries,
files fetched, made and deleted, updates sent. What to do is never decided here.

Results are kept (by the core) until the manager acknowledges them, so a manager restart
loses none: the worker reports them again when it is welcomed back.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import assert_never

import zmq

from kubevine.auth import Credentials
from kubevine.chunks import INLINE_MAX
from kubevine.digest import sha256_bytes
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
    FileRequest,
    ForgetFiles,
    Goodbye,
    Hello,
    InstallLibrary,
    Kill,
    LibraryStatus,
    Outcome,
    OutputFile,
    PeerLost,
    ProtocolError,
    RemoveLibrary,
    UpdateAck,
    Welcome,
    WorkerInfo,
    WorkerWork,
    frame,
    replace,
    value_output,
)
from kubevine.resources import Resources
from kubevine.session import Session
from kubevine.worker import events as ev
from kubevine.worker import outputs, sandbox
from kubevine.worker.cache import Cache
from kubevine.worker.core import WorkerCore
from kubevine.worker.derive import Deriver
from kubevine.worker.fetcher import Fetcher
from kubevine.worker.instructions import (
    Adopt,
    CancelCall,
    DeleteFromCache,
    Derive,
    Exit,
    Fetch,
    Instruction,
    KeepValue,
    KillProcess,
    RestartLibrary,
    SendDrain,
    SendGoodbye,
    SendLibraryStatus,
    SendUpdate,
    SpillValue,
    StartCall,
    StartLibrary,
    StartProcess,
    StopLibrary,
)
from kubevine.worker.library import LibraryInstance
from kubevine.worker.processes import Processes
from kubevine.worker.pystarter import Starter
from kubevine.worker.transfer import TransferServer

log = logging.getLogger(__name__)

IDLE_POLL = 0.2  # seconds the loop sleeps at most when nothing is due
TURN_BUDGET = 0.05  # seconds of manager messages handled per turn (the rest in the next turns)


class WorkerRefused(Exception):
    """The manager will not have this worker (wrong token, protocol version)."""


class _Leave(Exception):
    """The core said Exit: leave the loop with this code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class WorkerConfig:
    manager: str  # host:port
    token: str
    cores: float = 1
    memory: int = 1024
    disk: int = 4096
    gpus: int = 0
    workdir: Path = Path("kubevine-worker")
    cache_dir: Path | None = None  # default: <workdir>/cache
    node: str = field(default_factory=socket.gethostname)
    worker_id: str | None = None
    idle_timeout: float = 0.0  # exit after this long without tasks (0 = never)
    heartbeat_interval: float = 2.0
    stdout_cap: int = 1 << 20
    connect_timeout: float = 0.0  # give up if no manager answers for this long (0 = never)
    transfer_host: str = field(default_factory=lambda: os.environ.get("KUBEVINE_BIND_HOST") or "127.0.0.1")
    cache_limit_mb: int | None = None  # default: --disk (KUBEVINE_CACHE_SIZE_MB overrides)
    python_fork: bool = True  # PythonTasks forked from a clean starter (False: exec a new interpreter)
    encrypt: bool = False  # every socket encrypted (CURVE, keys from the token): --encrypt/--ssl
    single_shot: bool = False  # exit 0 once the manager it was connected to goes away
    features: list[str] = field(default_factory=list)  # --feature: tasks may ask for them


class WorkerService:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id = WorkerId(
            config.worker_id
            or os.environ.get("KUBEVINE_WORKER_ID")
            or f"{config.node}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        self.resources = Resources(
            cores=config.cores, memory=config.memory, disk=config.disk, gpus=config.gpus
        )
        os.umask(0o077)  # its files (cache, sandboxes, logs) are its user's alone, and its tasks' too
        config.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.workdir.chmod(0o700)  # (made by someone else with a wider mode: it is ours now)
        (config.workdir / "worker.pid").write_text(f"{os.getpid()}\n")  # for drain-local
        self.sandboxes = sandbox.Sandboxes(config.workdir / "sandboxes")
        limit_mb = config.cache_limit_mb or int(os.environ.get("KUBEVINE_CACHE_SIZE_MB") or config.disk)
        pins: dict[CacheName, int] = {}  # kept by the core, read by the cache (never evicts them)
        self.cache = Cache(config.cache_dir or config.workdir / "cache", limit_mb * 1024 * 1024, pins)
        self.core = WorkerCore(
            self.resources,
            self.cache,
            now=time.monotonic(),
            idle_timeout=config.idle_timeout,
            pins=pins,
            inline_max=INLINE_MAX,
        )
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.poller = zmq.Poller()
        self.creds = Credentials(config.token, config.encrypt)
        self.session: Session[WorkerWork] = Session(
            self.ctx,
            config.manager,
            self,
            TO_WORKER,
            poller=self.poller,
            credentials=self.creds,
            heartbeat_interval=config.heartbeat_interval,
            name=f"worker {self.worker_id}",
            on_disconnect=self._manager_gone if config.single_shot else None,
        )
        # peers fetch from this worker's cache; this worker fetches from theirs
        self.server = TransferServer(self.ctx, self.cache, config.transfer_host, self.creds)
        self.poller.register(self.server.sock, zmq.POLLIN)
        self.fetcher = Fetcher(
            self.ctx,
            self.cache,
            self.creds,
            ask_manager=lambda p, whole: self.session.send(FileRequest(pieces=p, cache_names=whole)),
            register=lambda sock: self.poller.register(sock, zmq.POLLIN),
        )
        self.poller.register(self.fetcher.wake_r, zmq.POLLIN)
        self.base_env = dict(os.environ)
        self.base_env.pop("KUBEVINE_TOKEN", None)  # tasks never see the workflow secret
        self.deriver = Deriver(self.cache, config.workdir / "minitasks", self.base_env)  # untar, minitask
        self.poller.register(self.deriver.wake_r, zmq.POLLIN)
        self.derive_evicted: list[CacheName] = []  # evicted to store made files, not yet told
        self.starter = Starter(config.workdir / "pystarter", self.base_env) if config.python_fork else None
        self.processes = Processes(
            self.cache,
            self.sandboxes,
            self.poller,
            self.base_env,
            self.starter,
            config.stdout_cap,
            output_limit=config.disk << 20,
        )
        self.libraries: dict[str, LibraryInstance] = {}
        self.signals = 0  # SIGTERM/SIGINT received, not yet handed to the core
        self.inbox: deque[tuple[WorkerWork, list[bytes]]] = deque()  # read, not yet handled
        self.connected_once = False  # welcomed at least once (--single-shot leaves when it ends)
        self.next_expire = 0.0  # when idle transfer sources are next forgotten
        # calls that write output files: their assignment and the folder they write in
        self.call_boxes: dict[tuple[TaskId, int], tuple[Assignment, Path]] = {}

    # ------------------------------------------------------------------ SessionOwner

    def hello(self) -> Hello:
        info = WorkerInfo(
            worker_id=self.worker_id,
            node=self.config.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            pod=os.environ.get("KUBEVINE_POD_NAME") or None,
            transfer_address=self.server.address,
            cache_group=f"{self.config.node}:{self.cache.root.resolve()}",
            resources=self.resources,
            cached=self.cache.names(),
            running=self.core.held(),
            libraries=self.core.ready_libraries(),
            features=self.config.features,
        )
        return Hello(protocol=PROTOCOL_VERSION, token=self.config.token, role="worker", worker=info)

    def welcomed(self, welcome: Welcome, *, again: bool, new_manager: bool) -> None:
        log.info("worker %s registered with manager %s", self.worker_id, welcome.manager_id)
        if new_manager:
            self.fetcher.manager_changed()
        self.connected_once = True
        self._feed(ev.Welcomed())

    def refused(self, reason: str) -> None:
        raise WorkerRefused(reason)

    def _manager_gone(self) -> None:
        """--single-shot: the manager's end of the connection closed (TaskVine's worker exits
        when its manager disconnects; the driver of a test waits for that)."""
        if self.connected_once:
            log.info("worker %s: the manager closed the connection; single shot: leaving", self.worker_id)
            raise _Leave(0)

    def reset(self) -> None:
        if self.config.single_shot and self.connected_once:
            log.info("worker %s: the manager went away; single shot: leaving", self.worker_id)
            raise _Leave(0)
        self._feed(ev.Disconnected())

    # ------------------------------------------------------------------ main loop

    def serve_forever(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        try:
            return self.loop()
        finally:
            self.close()

    def _on_term(self, signum: int, _f: FrameType | None) -> None:
        self.signals += 1  # handed to the core by the loop: a handler must not change its state

    def loop(self) -> int:
        try:
            self.session.connect()
            while True:
                self._turn()
                if self._gave_up():
                    return 1
                self.session.tick()
        except _Leave as e:
            return e.code

    def _turn(self) -> None:
        events = dict(self.poller.poll(self._poll_ms()))  # type: ignore[arg-type]  # float ms is fine
        while self.signals:
            self.signals -= 1
            self._feed(ev.TermRequested())
        if len(events) > (self.session.sock in events):
            for exited in self.processes.on_events(events):
                self._feed(exited)
            self._library_events(events)
            self._transfer_events(events)
        self.inbox.extend(self.session.read(events))
        budget = time.perf_counter() + TURN_BUDGET
        while self.inbox:  # at most TURN_BUDGET of messages a turn: peers and processes wait no longer
            msg, frames = self.inbox.popleft()
            try:
                self._on_message(msg, frames)
            except ProtocolError as e:
                log.error("worker %s: bad message from the manager: %s", self.worker_id, e)
            if time.perf_counter() > budget:
                break
        for grew in self.processes.watch():
            self._feed(grew)
        now = time.monotonic()
        if self.fetcher.fetches or self.deriver.jobs:
            self.fetcher.tick()
            self._settle()
        if now >= self.next_expire:
            self.server.expire()
            self.next_expire = now + 5.0
        self._feed(ev.Tick(now))
        self._send_calls()
        self.fetcher.flush()

    def _gave_up(self) -> bool:
        """No manager answered for --connect-timeout."""
        since, limit = self.session.waiting_since, self.config.connect_timeout
        if limit and since is not None and time.monotonic() - since > limit:
            log.error("worker %s: no manager at %s", self.worker_id, self.config.manager)
            return True
        return False

    def _poll_ms(self) -> float:
        if self.inbox:
            return 0.0
        wait = min(IDLE_POLL, self.session.due_in())
        due = self.core.wake_at()
        if due is not None:
            wait = min(wait, due - time.monotonic())
        deadline = self.processes.next_deadline()
        if deadline is not None:
            wait = min(wait, deadline - time.perf_counter())
        return max(0.0, wait * 1000)

    # ------------------------------------------------------------------ events in

    def _feed(self, event: ev.Event) -> None:
        self._do(self.core.handle(event))

    def _on_message(self, msg: WorkerWork, frames: list[bytes]) -> None:
        match msg:
            case Dispatch():
                if msg.acks:
                    self._feed(ev.ResultsAcked(msg.acks))
                payloads = [
                    (frame(frames, a.payload) or b"") if a.payload is not None else b"" for a in msg.tasks
                ]
                self._feed(ev.TasksAssigned(msg.tasks, payloads))
                self._settle()
            case UpdateAck():
                self._feed(ev.ResultsAcked(msg.tasks))
            case Kill():
                self._feed(ev.KillRequested(msg.tasks))
            case InstallLibrary():
                self._feed(ev.InstallRequested(msg.spec, frame(frames, msg.frame) or b""))
            case RemoveLibrary():
                self._feed(ev.RemoveRequested(msg.name))
            case FileData():
                data = frame(frames, msg.frame)
                self.fetcher.on_manager(msg.cache_name, data, msg.error, msg.directory, msg.offset, msg.total)
                self._settle()
            case ForgetFiles():
                self._feed(ev.ForgetRequested(msg.cache_names))
            case PeerLost():
                self.fetcher.source_lost(msg.worker, msg.address)
                self._settle()
            case Drain():
                self._feed(ev.Released())
            case ErrorMsg():
                log.error("worker %s: manager says %s: %s", self.worker_id, msg.code, msg.message)
            case _:
                assert_never(msg)

    def _settle(self) -> None:
        """Files that arrived or were made unblock their tasks; files no source had (and what
        was to be made from them) fail theirs."""
        arrived, failed, records = self.fetcher.take()
        evicted = self.fetcher.evicted + self.derive_evicted
        self.fetcher.evicted, self.derive_evicted = [], []
        for name, why in failed:
            self.deriver.part_failed(name, why)
        if self.deriver.jobs:
            self.deriver.advance()  # parts that arrived: make what is made from them
        made, found, not_made = self.deriver.take()
        present = [n for n, _ in arrived] + made + found
        if present or evicted or records:
            cached = [n for n, rec in arrived if rec.source != "node"] + made
            self._feed(ev.FilesArrived(present, cached, evicted, records))
        if failed or not_made:
            self._feed(ev.FetchFailed(failed + not_made))

    def _transfer_events(self, events: dict[object, int]) -> None:
        if self.server.sock in events:
            self.server.handle()
        for sock in self.fetcher.peers.values():
            if sock in events:
                self.fetcher.on_peer(sock)
        if self.fetcher.wake_r in events:
            self.fetcher.on_wake()
        if self.deriver.wake_r in events:
            self.derive_evicted += self.deriver.on_wake()
        self._settle()

    # ------------------------------------------------------------------ instructions out

    def _do(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            match ins:
                case StartProcess():
                    failed = self.processes.start(ins.assignment, ins.payload)
                    if failed is not None:
                        self._feed(failed)
                case StartCall():
                    self._start_call(ins.assignment, ins.payload)
                case SendUpdate():
                    self._send_calls()  # calls first: the library works while the update travels
                    self.session.send(ins.update, ins.frames)
                case Adopt():
                    self.cache.adopt(ins.name, ins.level)
                case Fetch():
                    self.fetcher.want(ins.stage, ins.mode)
                case Derive():
                    self.deriver.want(ins.binding)
                case DeleteFromCache():
                    self.cache.remove(ins.name)
                    self.server.forget(ins.name)
                case KillProcess():
                    self.processes.kill(ins.task_id, ins.attempt)
                case CancelCall():
                    lib = self.libraries.get(ins.library)
                    if lib is not None:
                        lib.outbox = [c for c in lib.outbox if c[0].spec.id != ins.task_id]
                case KeepValue():
                    self._keep_value(ins)
                case SpillValue():
                    self._spill_value(ins)
                case StartLibrary():
                    self._install_library(ins)
                case RestartLibrary():
                    self._start_library(self.libraries[ins.name])
                case StopLibrary():
                    self._stop_library(ins.name)
                case SendLibraryStatus():
                    self.session.send(LibraryStatus(name=ins.name, state=ins.state, error=ins.error))
                case SendDrain():
                    self.session.send(Drain())
                case SendGoodbye():
                    self.session.send(Goodbye(reason=ins.reason))
                case Exit():
                    raise _Leave(ins.code)
                case _:
                    assert_never(ins)

    def _start_call(self, a: Assignment, payload: bytes) -> None:
        lib = self.libraries.get(a.spec.library or "")
        if lib is None:  # the core thinks it runs: only if starting it failed here
            why = f"library {a.spec.library!r} is not running on this worker"
            res = AttemptResult(
                task_id=a.spec.id, attempt=a.attempt, outcome=Outcome.LIBRARY_ERROR, error=why
            )
            self._feed(ev.CallsReturned([(res, ())]))
            return
        extra: dict[str, object] | None = None
        if a.spec.inputs or a.spec.outputs:  # the call finds its inputs in the cache
            value = value_output(a.spec.outputs)
            extra = {
                "inputs": {
                    b.remote_name: str(self.cache.path(b.cache_name))
                    for b in a.spec.inputs
                    if b.cache_name is not None
                },
                "value": value is not None,
            }
            if any(b is not value for b in a.spec.outputs):  # files it writes: in a folder we keep
                box = self.config.workdir / "calls" / f"{a.spec.id}-{a.attempt}"
                extra["box"] = str(box)
                self.call_boxes[(a.spec.id, a.attempt)] = (a, box)
        lib.outbox.append((a, payload, extra))

    def _returned(self, results: list[tuple[AttemptResult, list[bytes]]]) -> ev.CallsReturned:
        """Calls' results; a call that declared output files gets them collected from its
        folder, as a command's are from its sandbox (on the loop: a call's outputs are bounded
        by the same limits, and calls that write files are the rare ones)."""
        out: list[tuple[AttemptResult, list[bytes]]] = []
        cached: list[CacheName] = []
        evicted: list[CacheName] = []
        for res, frames in results:
            entry = self.call_boxes.pop((res.task_id, res.attempt), None)
            if entry is None:
                out.append((res, frames))
                continue
            a, box = entry
            try:
                j = outputs.judge_call(a, box, res, frames, self.config.disk << 20)
                r = j.result
                for name, path, level in j.keep:  # temps and spills into the cache
                    try:
                        evicted += self.cache.evict_for(path.stat().st_size if path.is_file() else 0)
                        self.cache.put_path(name, path, level)
                        cached.append(name)
                    except OSError as e:
                        r = replace(r, outcome=Outcome.OUTPUT_MISSING, error=f"output could not be kept: {e}")
                out.append((r, j.frames))
            finally:
                shutil.rmtree(box, ignore_errors=True)
        return ev.CallsReturned(out, cached, evicted)

    def _keep_value(self, ins: KeepValue) -> None:
        """A call's return value (pickled) stays here as its temp output, for its consumers."""
        name, res, data = ins.binding.cache_name, ins.result, ins.data
        assert name is not None
        evicted: list[CacheName] = []
        try:
            evicted += self.cache.evict_for(len(data))
            self.cache.put_bytes(name, data, ins.binding.cache)
        except OSError as e:
            bad = {
                "outcome": Outcome.SANDBOX_ERROR,
                "output_frame": None,
                "error": f"could not keep the value: {e}",
            }
            self._feed(ev.ValueKept(res.model_copy(update=bad), None, evicted))
            return
        out = OutputFile(
            remote_name=ins.binding.remote_name, cache_name=name, size=len(data), checksum=sha256_bytes(data)
        )
        self._feed(
            ev.ValueKept(
                res.model_copy(update={"output_frame": None, "outputs": [*res.outputs, out]}), name, evicted
            )
        )

    def _spill_value(self, ins: SpillValue) -> None:
        """A call's result too large for a message stays here, under its spill name."""
        name = CacheName("spill-" + sha256_bytes(ins.data))
        evicted: list[CacheName] = []
        try:
            evicted += self.cache.evict_for(len(ins.data))
            self.cache.put_bytes(name, ins.data)
        except OSError as e:
            why = f"its result ({len(ins.data)} bytes) could not be kept: {e}"
            bad = replace(ins.result, outcome=Outcome.SANDBOX_ERROR, output_frame=None, error=why)
            self._feed(ev.ValueKept(bad, None, evicted))
            return
        res = replace(ins.result, output_frame=None, output_spill=name)
        self._feed(ev.ValueKept(res, name, evicted))

    # ------------------------------------------------------------------ libraries

    def _install_library(self, ins: StartLibrary) -> None:
        spec = ins.spec
        env = {**self.base_env, "KUBEVINE_CACHE_DIR": str(self.cache.root)}  # where its files are
        lib = LibraryInstance(spec, ins.payload, self.config.workdir / "libraries", self.ctx, env)
        lib.inputs = {b.remote_name: self.cache.path(b.cache_name) for b in spec.inputs if b.cache_name}
        self.libraries[spec.name] = lib
        self._start_library(lib)
        log.info("worker %s: starting library %s (%s)", self.worker_id, spec.name, spec.exec_mode)

    def _start_library(self, lib: LibraryInstance) -> None:
        lib.start()
        assert lib.sock is not None and lib.pidfd is not None
        self.poller.register(lib.sock, zmq.POLLIN)
        self.poller.register(lib.pidfd, zmq.POLLIN)

    def _forget_library(self, lib: LibraryInstance) -> None:
        if lib.sock is not None:
            self.poller.unregister(lib.sock)
        if lib.pidfd is not None:
            self.poller.unregister(lib.pidfd)

    def _stop_library(self, name: str) -> None:
        lib = self.libraries.pop(name, None)
        if lib is not None:
            self._forget_library(lib)
            lib.stop()

    def _send_calls(self) -> None:
        for lib in self.libraries.values():
            if lib.outbox:
                lib.send_calls()

    def _library_events(self, events: dict[object, int]) -> None:
        for name, lib in list(self.libraries.items()):
            while lib.sock is not None and lib.sock in events and lib.sock.poll(0):
                kind, results, error = lib.read()
                if kind == "ready":
                    log.info("worker %s: library %s ready", self.worker_id, name)
                    self._feed(ev.LibraryReady(name))
                elif kind == "failed":
                    log.error("worker %s: library %s failed to start:\n%s", self.worker_id, name, error)
                    self._feed(ev.LibraryFailed(name, error or ""))
                    break
                if results:
                    self._feed(self._returned(results))
            if lib.pidfd is not None and lib.pidfd in events and self.libraries.get(name) is lib:
                self._forget_library(lib)
                why, failed = lib.died()
                log.warning("worker %s: %s; %d call(s) failed", self.worker_id, why, len(failed))
                lost = [r for r, _ in failed]
                for r in lost:
                    gone = self.call_boxes.pop((r.task_id, r.attempt), None)
                    if gone is not None:
                        shutil.rmtree(gone[1], ignore_errors=True)
                self._feed(ev.LibraryDied(name, why, lost, lib.may_restart(), lib.log_tail()))

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        for lib in self.libraries.values():
            lib.stop()
        self.processes.close()
        if self.starter is not None:
            self.starter.close()
        self.sandboxes.clear()
        self.server.close()
        self.fetcher.close()
        self.deriver.close()
        self.cache.forget_levels({CacheLevel.TASK, CacheLevel.WORKFLOW, CacheLevel.WORKER})
        self.cache.close()
        self.session.close()
