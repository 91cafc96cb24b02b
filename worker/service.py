"""The worker process: one loop over the manager connection and its running tasks.

One thread owns the ZeroMQ socket and every task process: a command is started without
waiting, and the loop polls the manager socket together with a pidfd per running process,
so a finished task is noticed at once with no thread hand-off. Everything that started
or finished since the last update travels to the manager in one :class:`WorkerUpdate`.
Results are kept until the manager acknowledges them, so a manager restart loses none:
the worker reports them again when it reconnects.

The worker enforces its own resources: the manager may queue a few tasks ahead, but a task
starts only when its cores, memory, disk and gpus are free here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import zmq

from kubevine import filetree
from kubevine.digest import sha256_bytes, sha256_file
from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    AttemptResult,
    CacheLevel,
    Dispatch,
    Drain,
    ErrorMsg,
    FileBinding,
    FileData,
    FileKind,
    FileRequest,
    FileSource,
    ForgetFiles,
    Goodbye,
    Heartbeat,
    Hello,
    InstallLibrary,
    Kill,
    LibrarySpec,
    LibraryStatus,
    Outcome,
    OutputFile,
    PeerLost,
    ProtocolError,
    Refused,
    RemoveLibrary,
    StageIn,
    TaskKind,
    TaskRef,
    TransferRecord,
    UpdateAck,
    Welcome,
    WorkerInfo,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
    frame,
    replace,
    send,
    value_output,
    walk_bindings,
)
from kubevine.resources import Resources, Tally
from kubevine.worker import sandbox
from kubevine.worker.cache import Cache, dir_size
from kubevine.worker.derive import Deriver
from kubevine.worker.library import LibraryInstance
from kubevine.worker.pystarter import Starter
from kubevine.worker.transfer import Fetcher, TransferServer

log = logging.getLogger(__name__)

UPDATE_WINDOW = 0.002  # seconds between updates while busy (see _flush)
CALL_START_DELAY = 0.005  # a call's start is reported only once it has run this long


class WorkerRefused(Exception):
    """The manager will not have this worker (wrong token, protocol version)."""


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


@dataclass
class Slot:
    """A task the worker holds: queued (waiting for inputs or resources) or running."""

    assignment: Assignment
    missing: set[CacheName]
    attempt: sandbox.Attempt | None = None
    started: bool = False  # calls: handed to their library


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
        self.used = Tally()
        config.workdir.mkdir(parents=True, exist_ok=True)
        (config.workdir / "worker.pid").write_text(f"{os.getpid()}\n")  # for drain-local
        self.sandboxes = sandbox.Sandboxes(config.workdir / "sandboxes")
        limit_mb = config.cache_limit_mb or int(os.environ.get("KUBEVINE_CACHE_SIZE_MB") or config.disk)
        self.cache = Cache(config.cache_dir or config.workdir / "cache", limit_mb * 1024 * 1024)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] | None = None
        self.poller = zmq.Poller()
        # peers fetch from this worker's cache; this worker fetches from theirs
        self.server = TransferServer(self.ctx, self.cache, config.transfer_host)
        self.poller.register(self.server.sock, zmq.POLLIN)
        self.fetcher = Fetcher(
            self.ctx,
            self.cache,
            ask_manager=lambda names: self._send(FileRequest(cache_names=names)),
            register=lambda sock: self.poller.register(sock, zmq.POLLIN),
        )
        self.poller.register(self.fetcher.wake_r, zmq.POLLIN)
        self.transfers: list[TransferRecord] = []
        self.evicted: list[CacheName] = []
        self.by_fd: dict[int, sandbox.Attempt] = {}
        self.slots: dict[TaskId, Slot] = {}
        self.queue: deque[TaskId] = deque()
        self.started: list[TaskRef] = []
        self.finished: list[tuple[AttemptResult, list[bytes]]] = []
        self.unacked: dict[tuple[TaskId, int], tuple[AttemptResult, list[bytes]]] = {}
        self.new_cached: list[CacheName] = []
        self.doomed: set[CacheName] = set()  # undeclared while a task read them
        self.manager_id: str | None = None
        self.registered = False
        self.last_heard = 0.0
        self.last_sent = 0.0
        self.draining = False
        self.running = True
        self.idle_since = time.time()
        self.base_env = dict(os.environ)
        self.base_env.pop("KUBEVINE_TOKEN", None)  # tasks never see the workflow secret
        self.deriver = Deriver(self.cache, config.workdir / "minitasks", self.base_env)  # untar, minitask
        self.poller.register(self.deriver.wake_r, zmq.POLLIN)
        self.starter = Starter(config.workdir / "pystarter", self.base_env) if config.python_fork else None
        self.heartbeat_timeout = 30.0
        self._payloads: dict[TaskId, bytes] = {}
        self.libraries: dict[str, LibraryInstance] = {}
        self.lib_by_fd: dict[int, LibraryInstance] = {}
        self._last_update = 0.0
        self._flush_due: float | None = None
        self.call_starts: list[tuple[float, TaskId, int]] = []  # calls handed to a library, unreported
        self._drain_requested = False
        self.hello_sent = 0.0

    # ------------------------------------------------------------------ connection

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(f"tcp://{self.config.manager}")
        self.sock = s
        self.registered = False
        self._hello()

    def _hello(self) -> None:
        held = [TaskRef(task_id=tid, attempt=s.assignment.attempt) for tid, s in self.slots.items()]
        held += [TaskRef(task_id=t, attempt=a) for (t, a) in self.unacked]
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
            running=held,
            libraries=[n for n, lib in self.libraries.items() if lib.state == "ready"],
        )
        self._send(Hello(protocol=PROTOCOL_VERSION, token=self.config.token, role="worker", worker=info))
        self.hello_sent = time.time()

    def _send(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        assert self.sock is not None
        send(self.sock, encode(msg, frames or []))
        self.last_sent = time.time()

    # ------------------------------------------------------------------ main loop

    def serve_forever(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        try:
            return self.loop()
        finally:
            self.close()

    def _on_term(self, signum: int, _f: FrameType | None) -> None:
        if self.draining:
            log.warning("worker %s: second signal, leaving now", self.worker_id)
            self.running = False
        else:
            log.info("worker %s: signal %d, draining", self.worker_id, signum)
            self.draining = True
            self._drain_requested = True

    def _reconnect(self) -> None:
        if self.sock is not None:
            self.poller.unregister(self.sock)
        self._connect()
        assert self.sock is not None
        self.poller.register(self.sock, zmq.POLLIN)

    def loop(self) -> int:
        cfg = self.config
        self._reconnect()
        backoff = 0.1
        first_contact = time.time()
        while self.running:
            events = dict(self.poller.poll(self._poll_ms()))  # type: ignore[arg-type]  # float ms is fine
            now = time.time()
            if len(events) > (self.sock in events):
                self._collect_finished(events)
                self._library_events(events)
                self._transfer_events(events)
                self._start_runnable()
            if self.sock in events:
                self._drain_socket()
            if self._drain_requested and self.registered:
                self._drain_requested = False
                self._send(Drain())
            self._enforce_time_limits()
            if self.fetcher.fetches or self.deriver.jobs:
                self.fetcher.tick()
                self._fetches_settled()
            self._start_runnable()
            for lib in self.libraries.values():
                lib.send_calls()
            self._flush()
            if not self.registered:
                if cfg.connect_timeout and now - first_contact > cfg.connect_timeout:
                    log.error("worker %s: no manager at %s", self.worker_id, cfg.manager)
                    return 1
                if now - self.hello_sent > backoff:
                    backoff = min(backoff * 2, 5.0)
                    self._reconnect()
                continue
            backoff = 0.1
            first_contact = now
            if now - self.last_heard > self.heartbeat_timeout:
                log.warning("worker %s: manager silent, reconnecting", self.worker_id)
                self._reconnect()
                continue
            if now - self.last_sent > cfg.heartbeat_interval:
                self._send(Heartbeat())
            if self.draining and not self.slots:
                self._flush()
                self._send(Goodbye(reason="drained"))
                return 0
            if cfg.idle_timeout and not self.slots and now - self.idle_since > cfg.idle_timeout:
                log.info("worker %s: idle for %.0fs, leaving", self.worker_id, cfg.idle_timeout)
                self._send(Goodbye(reason="idle timeout"))
                return 0
        return 0

    def _poll_ms(self) -> float:
        deadlines = [a.deadline for a in self.by_fd.values() if a.deadline is not None]
        if self._flush_due is not None:
            deadlines.append(self._flush_due)
        if not deadlines:
            return 200
        return max(0.0, min(200.0, (min(deadlines) - time.perf_counter()) * 1000))

    def _enforce_time_limits(self) -> None:
        now = time.perf_counter()
        for att in self.by_fd.values():
            if att.deadline is not None and now >= att.deadline and att.proc is not None:
                sandbox.kill_process(att.proc, att.pidfd)

    def _drain_socket(self) -> None:
        assert self.sock is not None
        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_heard = time.time()
            try:
                msg, frames = decode(parts)
                self._handle(msg, frames)
            except ProtocolError as e:
                log.error("worker %s: bad message from the manager: %s", self.worker_id, e)

    def _handle(self, msg: object, frames: list[bytes]) -> None:
        if isinstance(msg, Welcome):
            self.manager_id = msg.manager_id
            self.registered = True
            self.heartbeat_timeout = msg.heartbeat_timeout
            self.config.heartbeat_interval = min(self.config.heartbeat_interval, msg.heartbeat_interval)
            log.info("worker %s registered with manager %s", self.worker_id, msg.manager_id)
            if self.unacked:  # results the manager may not have recorded
                self.finished.extend(self.unacked.values())
                self.unacked.clear()
            if self.draining:
                self._send(Drain())
        elif isinstance(msg, Refused):
            raise WorkerRefused(msg.reason)
        elif isinstance(msg, Dispatch):
            for a in msg.tasks:
                self._accept(a, frames)
        elif isinstance(msg, UpdateAck):
            for ref in msg.tasks:
                self.unacked.pop((ref.task_id, ref.attempt), None)
        elif isinstance(msg, Kill):
            for ref in msg.tasks:
                self._kill(ref)
        elif isinstance(msg, InstallLibrary):
            self._install_library(msg.spec, frame(frames, msg.frame) or b"")
        elif isinstance(msg, RemoveLibrary):
            self._remove_library(msg.name, "removed by the manager")
        elif isinstance(msg, FileData):
            self._file_arrived(msg, frames)
        elif isinstance(msg, ForgetFiles):
            for name in msg.cache_names:
                if self.cache.pins.get(name):
                    self.doomed.add(name)  # a running task reads it: deleted when it ends
                else:
                    self._drop(name)
        elif isinstance(msg, PeerLost):
            self.fetcher.source_lost(msg.worker, msg.address)
            self._fetches_settled()
        elif isinstance(msg, Drain):
            log.info("worker %s released by the manager", self.worker_id)
            self._send(Goodbye(reason="drained"))
            self.running = False
        elif isinstance(msg, Heartbeat):
            if msg.manager_id and self.manager_id and msg.manager_id != self.manager_id:
                self._hello()  # a new manager: introduce ourselves again
        elif isinstance(msg, ErrorMsg):
            if msg.code == "not_registered":
                self._hello()
            else:
                log.error("worker %s: manager says %s: %s", self.worker_id, msg.code, msg.message)

    # ------------------------------------------------------------------ tasks

    def _accept(self, a: Assignment, frames: list[bytes]) -> None:
        tid = a.spec.id
        if a.payload is not None:
            self._payloads[tid] = frame(frames, a.payload) or b""
        slot = Slot(a, set())
        self.slots[tid] = slot
        self.queue.append(tid)
        stages = {s.cache_name: s for s in a.stage}
        for b in walk_bindings(a.spec.inputs):  # inputs and what they are made from stay
            if b.cache_name is not None:
                self.cache.pin(b.cache_name)
        for b in a.spec.inputs:
            if b.cache_name is not None and not self._obtain(b, stages):
                slot.missing.add(b.cache_name)
        self._fetches_settled()

    def _obtain(self, b: FileBinding, stages: dict[CacheName, StageIn]) -> bool:
        """Whether ``b`` is in the cache; if not, start fetching or making it."""
        name = b.cache_name
        assert name is not None
        if self.cache.sound(name, stages[name].checksum if name in stages else None):
            self.cache.adopt(name, b.cache)
            return True
        if b.kind in (FileKind.UNTAR, FileKind.MINITASK):  # made here, from its parts
            self.deriver.want(b)
            for part in Deriver.parts_of(b):
                self._obtain(part, stages)
        else:
            stage = stages.get(name) or StageIn(cache_name=name, sources=[FileSource(kind="manager")])
            self.fetcher.want(stage)
        return False

    def _file_arrived(self, msg: FileData, frames: list[bytes]) -> None:
        self.fetcher.on_manager(msg.cache_name, frame(frames, msg.frame), msg.error, msg.directory)
        self._fetches_settled()

    def _transfer_events(self, events: dict[object, int]) -> None:
        if self.server.sock in events:
            self.server.handle()
        for sock in self.fetcher.peers.values():
            if sock in events:
                self.fetcher.on_peer(sock)
        if self.fetcher.wake_r in events:
            self.fetcher.on_wake()
        if self.deriver.wake_r in events:
            self.evicted += self.deriver.on_wake()
        self._fetches_settled()

    def _fetches_settled(self) -> None:
        """Files that arrived unblock their tasks; files no source had fail theirs."""
        arrived, failed, records = self.fetcher.take()
        self.transfers += records
        if self.fetcher.evicted:
            self.evicted += self.fetcher.evicted
            self.fetcher.evicted = []
        for name, rec in arrived:
            if rec.source != "node":
                self.new_cached.append(name)
            for slot in self.slots.values():
                slot.missing.discard(name)
        for name, why in failed:
            self.deriver.part_failed(name, why)
        if self.deriver.jobs:
            self.deriver.advance()  # parts that arrived: make what is made from them
        made, found, not_made = self.deriver.take()
        self.new_cached += made
        for name in made + found:
            for slot in self.slots.values():
                slot.missing.discard(name)
        failed = failed + not_made
        for name, why in failed:
            for slot in list(self.slots.values()):
                if name in slot.missing and slot.attempt is None:
                    self._fail_now(
                        slot, Outcome.INPUT_MISSING, f"input {name} could not be fetched or made: {why}"
                    )

    def _fail_now(self, slot: Slot, outcome: Outcome, error: str) -> None:
        a = slot.assignment
        del self.slots[a.spec.id]
        self._release_inputs(a)
        self.finished.append(
            (AttemptResult(task_id=a.spec.id, attempt=a.attempt, outcome=outcome, error=error), [])
        )

    def _start_runnable(self) -> None:
        if not self.queue:
            return
        kept: deque[TaskId] = deque()
        while self.queue:
            tid = self.queue.popleft()
            slot = self.slots.get(tid)
            if slot is None or slot.started:
                continue
            need = slot.assignment.spec.resources
            if slot.missing or not self.used.room_for(need, self.resources):
                kept.append(tid)
                continue
            self._start(slot)
        self.queue = kept

    def _start(self, slot: Slot) -> None:
        a = slot.assignment
        if a.spec.kind == TaskKind.CALL:
            self._start_call(slot)
            return
        att = sandbox.Attempt(a, self.sandboxes.take())
        slot.attempt = att
        self.used.add(a.spec.resources)
        self.started.append(TaskRef(task_id=a.spec.id, attempt=a.attempt))
        try:
            for b in a.spec.inputs:
                assert b.cache_name is not None
                self.cache.link_into(b.cache_name, att.sandbox / b.remote_name)
        except OSError as e:
            self._ended(att, att.result(Outcome.SANDBOX_ERROR, error=f"could not prepare the sandbox: {e}"))
            return
        if a.spec.kind == TaskKind.PYTHON:
            payload = self._payloads.pop(a.spec.id, b"")
            failed = sandbox.start_python(att, self.base_env, payload, self.starter)
        else:
            failed = sandbox.start_command(att, self.base_env)
        if failed is not None:
            self._ended(att, failed)
            return
        assert att.pidfd is not None
        self.by_fd[att.pidfd] = att
        self.poller.register(att.pidfd, zmq.POLLIN)

    # ------------------------------------------------------------------ libraries

    def _install_library(self, spec: LibrarySpec, payload: bytes) -> None:
        old = self.libraries.get(spec.name)
        if old is not None and old.state in ("starting", "ready"):
            if old.state == "ready":
                self._send(LibraryStatus(name=spec.name, state="ready"))
            return
        env = {**self.base_env, "KUBEVINE_CACHE_DIR": str(self.cache.root)}  # where its files are
        lib = LibraryInstance(spec, payload, self.config.workdir / "libraries", self.ctx, env)
        self.libraries[spec.name] = lib
        self.used.add(spec.resources)
        self._start_library(lib)
        log.info("worker %s: starting library %s (%s)", self.worker_id, spec.name, spec.exec_mode)

    def _start_library(self, lib: LibraryInstance) -> None:
        lib.start()
        assert lib.sock is not None and lib.pidfd is not None
        self.poller.register(lib.sock, zmq.POLLIN)
        self.poller.register(lib.pidfd, zmq.POLLIN)
        self.lib_by_fd[lib.pidfd] = lib

    def _forget_library(self, lib: LibraryInstance) -> None:
        if lib.sock is not None:
            self.poller.unregister(lib.sock)
        if lib.pidfd is not None:
            self.poller.unregister(lib.pidfd)
            self.lib_by_fd.pop(lib.pidfd, None)

    def _remove_library(self, name: str, why: str, error: str | None = None) -> None:
        lib = self.libraries.pop(name, None)
        if lib is None:
            return
        self._forget_library(lib)
        for a, _, _ in lib.outbox:
            self._call_failed(a, f"library {name!r} is gone from this worker: {why}")
        for a, _ in list(lib.inflight.values()):
            self._call_failed(a, f"library {name!r} is gone from this worker: {why}")
        lib.stop()
        self.used.remove(lib.spec.resources)
        self._send(LibraryStatus(name=name, state="failed" if error else "gone", error=error))

    def _start_call(self, slot: Slot) -> None:
        a = slot.assignment
        lib = self.libraries.get(a.spec.library or "")
        self.call_starts.append((time.perf_counter(), a.spec.id, a.attempt))
        slot.started = True
        if lib is None or lib.state not in ("starting", "ready"):
            self._call_failed(a, f"library {a.spec.library!r} is not running on this worker")
            return
        extra = None
        if a.spec.inputs or a.spec.outputs:  # the call finds its inputs in the cache
            extra = {
                "inputs": {
                    b.remote_name: str(self.cache.path(b.cache_name))
                    for b in a.spec.inputs
                    if b.cache_name is not None
                },
                "value": value_output(a.spec.outputs) is not None,
            }
        lib.outbox.append((a, self._payloads.pop(a.spec.id, b""), extra))

    def _call_failed(self, a: Assignment, why: str) -> None:
        slot = self.slots.get(a.spec.id)
        if slot is None or slot.assignment.attempt != a.attempt:
            return
        res = AttemptResult(task_id=a.spec.id, attempt=a.attempt, outcome=Outcome.LIBRARY_ERROR, error=why)
        self._call_ended(a, res, [])

    def _call_ended(self, a: Assignment, res: AttemptResult, frames: list[bytes]) -> None:
        """A call's result (or failure) is in: its inputs are free; a value to keep goes to the cache."""
        del self.slots[a.spec.id]
        self._release_inputs(a)
        kept = value_output(a.spec.outputs) if res.outcome == Outcome.SUCCESS and frames else None
        if kept is not None:
            res, frames = self._keep_value(kept, res, frames[0]), []
        self.finished.append((res, frames))

    def _keep_value(self, b: FileBinding, res: AttemptResult, data: bytes) -> AttemptResult:
        """A call's return value (pickled) stays here as its temp output, for its consumers."""
        assert b.cache_name is not None
        try:
            self.evicted += self.cache.evict_for(len(data))
            self.cache.put_bytes(b.cache_name, data, b.cache)
        except OSError as e:
            return res.model_copy(
                update={
                    "outcome": Outcome.SANDBOX_ERROR,
                    "output_frame": None,
                    "error": f"could not keep the value: {e}",
                }
            )
        self.new_cached.append(b.cache_name)
        out = OutputFile(
            remote_name=b.remote_name,
            cache_name=b.cache_name,
            size=len(data),
            checksum=sha256_bytes(data),
        )
        return res.model_copy(update={"output_frame": None, "outputs": [out]})

    def _library_events(self, events: dict[object, int]) -> None:
        for lib in list(self.libraries.values()):
            while lib.sock is not None and lib.sock in events and lib.sock.poll(0):
                kind, results, error = lib.read()
                if kind == "ready":
                    log.info("worker %s: library %s ready", self.worker_id, lib.spec.name)
                    self._send(LibraryStatus(name=lib.spec.name, state="ready"))
                elif kind == "failed":
                    log.error(
                        "worker %s: library %s failed to start:\n%s", self.worker_id, lib.spec.name, error
                    )
                    self._remove_library(lib.spec.name, "it failed to start", error=error)
                    break
                for res, fr in results:
                    slot = self.slots.get(res.task_id)
                    if slot is None or slot.assignment.attempt != res.attempt:
                        continue  # killed: nobody wants it
                    self._call_ended(slot.assignment, res, fr)
            if lib.pidfd is not None and lib.pidfd in events:
                self._library_died(lib)
        if not self.slots:
            self.idle_since = time.time()

    def _library_died(self, lib: LibraryInstance) -> None:
        name = lib.spec.name
        was_ready = lib.state == "ready"
        self._forget_library(lib)
        why, failed = lib.died()
        log.warning("worker %s: %s; %d call(s) failed", self.worker_id, why, len(failed))
        for res, fr in failed:
            slot = self.slots.get(res.task_id)
            if slot is not None and slot.assignment.attempt == res.attempt:
                self._call_ended(slot.assignment, res, fr)
        if was_ready and lib.may_restart():
            self._start_library(lib)  # the calls still queued will go to the new process
        else:
            self._remove_library(name, why, error=f"{why}\n{lib.log_tail()}")

    def _collect_finished(self, events: dict[object, int]) -> None:
        for fd in [fd for fd in events if isinstance(fd, int) and fd in self.by_fd]:
            att = self.by_fd.pop(fd)
            self.poller.unregister(fd)
            try:
                res = sandbox.finish_command(att, self.config.stdout_cap)
                if res.outcome == Outcome.SUCCESS and any(o.cache_name for o in res.outputs):
                    res = self._keep_temps(att, res)
            except Exception as e:  # a bug of ours: report it, keep the worker alive
                log.exception("worker %s: collecting task %s failed", self.worker_id, att.assignment.spec.id)
                res = att.result(Outcome.SANDBOX_ERROR, error=repr(e))
            self._ended(att, res)

    def _release_inputs(self, a: Assignment) -> None:
        """The task no longer needs its inputs: unpin them; drop task-level and undeclared ones."""
        for b in walk_bindings(a.spec.inputs):
            if b.cache_name is not None:
                self.cache.unpin(b.cache_name)
                if self.cache.pins.get(b.cache_name):
                    continue
                if b.cache == CacheLevel.TASK or b.cache_name in self.doomed:
                    self._drop(b.cache_name)

    def _drop(self, name: CacheName) -> None:
        self.doomed.discard(name)
        if self.cache.has(name):
            self.cache.remove(name)
            self.evicted.append(name)

    def _keep_temps(self, att: sandbox.Attempt, res: AttemptResult) -> AttemptResult:
        """Move temp outputs from the sandbox into the cache, where consumers fetch them."""
        levels = {b.remote_name: b.cache for b in att.assignment.spec.outputs}
        outs = []
        for o in res.outputs:
            if o.cache_name is None:
                outs.append(o)
                continue
            src = att.sandbox / o.remote_name
            checksum = filetree.tree_hash(src) if src.is_dir() else sha256_file(src)
            self.evicted += self.cache.evict_for(dir_size(src))
            size = self.cache.put_path(o.cache_name, src, levels.get(o.remote_name, CacheLevel.WORKFLOW))
            self.new_cached.append(o.cache_name)
            outs.append(o.model_copy(update={"size": size, "checksum": checksum}))
        return res.model_copy(update={"outputs": outs})

    def _ended(self, att: sandbox.Attempt, res: AttemptResult) -> None:
        a = att.assignment
        self._release_inputs(a)
        self.sandboxes.give_back(att.sandbox)
        slot = self.slots.pop(a.spec.id, None)
        self.used.remove(a.spec.resources)
        if slot is not None and not att.killed:
            self.finished.append((res, att.frames))
        if not self.slots:
            self.idle_since = time.time()

    def _kill(self, ref: TaskRef) -> None:
        slot = self.slots.get(ref.task_id)
        if slot is None or slot.assignment.attempt != ref.attempt:
            return
        if slot.assignment.spec.kind == TaskKind.CALL:
            del self.slots[ref.task_id]  # a call in a library cannot be interrupted: its result is dropped
            self._release_inputs(slot.assignment)
            lib = self.libraries.get(slot.assignment.spec.library or "")
            if lib is not None:
                lib.outbox = [c for c in lib.outbox if c[0].spec.id != ref.task_id]
        elif slot.attempt is None:  # still waiting for inputs or room: it never started
            del self.slots[ref.task_id]
            self._release_inputs(slot.assignment)
        else:
            slot.attempt.killed = True
            if slot.attempt.proc is not None:
                sandbox.kill_process(slot.attempt.proc, slot.attempt.pidfd)

    def _settle_call_starts(self, now: float) -> None:
        """Report the start of calls still running after CALL_START_DELAY (or along with an
        update that goes out anyway); a call that has finished needs no start report."""
        if self.finished:
            done = {(r.task_id, r.attempt) for r, _ in self.finished}
            self.call_starts = [c for c in self.call_starts if (c[1], c[2]) not in done]
        if not self.call_starts:
            return
        anyway = self.started or self.finished or self.new_cached or self.transfers or self.evicted
        if anyway or now - self.call_starts[0][0] >= CALL_START_DELAY:
            self.started += [TaskRef(task_id=t, attempt=a) for _, t, a in self.call_starts]
            self.call_starts = []

    def _flush(self) -> None:
        if not self.registered:
            return
        now = time.perf_counter()
        if self.call_starts:
            self._settle_call_starts(now)
        if not (self.started or self.finished or self.new_cached or self.transfers or self.evicted):
            self._flush_due = self.call_starts[0][0] + CALL_START_DELAY if self.call_starts else None
            return
        # Coalesce under load: while tasks are still running here, send at most one update
        # per UPDATE_WINDOW; an idle worker (or a first result) reports at once.
        if self.by_fd and now - self._last_update < UPDATE_WINDOW:
            self._flush_due = self._last_update + UPDATE_WINDOW
            return
        self._flush_due = None
        self._last_update = now
        results: list[AttemptResult] = []
        frames: list[bytes] = []
        for res, fr in self.finished:
            base = len(frames)
            frames += fr
            if base:
                if res.outputs:
                    res = replace(
                        res,
                        output_frame=None if res.output_frame is None else res.output_frame + base,
                        outputs=[
                            o if o.frame is None else replace(o, frame=o.frame + base) for o in res.outputs
                        ],
                    )
                elif res.output_frame is not None:
                    res = replace(res, output_frame=res.output_frame + base)
            results.append(res)
        for res, fr in self.finished:
            self.unacked[(res.task_id, res.attempt)] = (res, fr)
        self._send(
            WorkerUpdate(
                started=self.started,
                results=results,
                cached=self.new_cached,
                evicted=self.evicted,
                transfers=self.transfers,
            ),
            frames,
        )
        self.started, self.finished, self.new_cached = [], [], []
        self.transfers, self.evicted = [], []

    def close(self) -> None:
        for lib in self.libraries.values():
            lib.stop()
        for att in self.by_fd.values():
            if att.proc is not None:
                sandbox.kill_process(att.proc, att.pidfd)
                att.proc.wait()
        if self.starter is not None:
            self.starter.close()
        self.sandboxes.clear()
        self.server.close()
        self.fetcher.close()
        self.deriver.close()
        self.cache.forget_levels({CacheLevel.TASK, CacheLevel.WORKFLOW, CacheLevel.WORKER})
        self.cache.close()
        if self.sock is not None:
            self.sock.close(0)
