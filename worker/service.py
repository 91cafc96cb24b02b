"""The worker process: one loop over the manager connection and its running tasks.

The main thread owns the ZeroMQ socket. Tasks run in executor threads (each waits on its
child process, so the GIL is free); a finished attempt is posted back to the main thread
through an inproc socket, and everything that finished since the last update travels to
the manager in one :class:`WorkerUpdate`. Results are kept until the manager acknowledges
them, so a manager restart loses none: the worker reports them again when it reconnects.

The worker enforces its own resources: the manager may queue a few tasks ahead, but a task
starts only when its cores, memory, disk and gpus are free here.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import zmq

from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    AttemptResult,
    Dispatch,
    Drain,
    ErrorMsg,
    FileData,
    FileRequest,
    Goodbye,
    Heartbeat,
    Hello,
    Kill,
    Outcome,
    ProtocolError,
    Refused,
    TaskRef,
    UpdateAck,
    Welcome,
    WorkerInfo,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
    frame,
)
from kubevine.resources import Resources
from kubevine.worker import sandbox
from kubevine.worker.cache import Cache

log = logging.getLogger(__name__)


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


@dataclass
class Slot:
    """A task the worker holds: queued (waiting for inputs or resources) or running."""

    assignment: Assignment
    missing: set[CacheName]
    attempt: sandbox.Attempt | None = None


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
        self.used = Resources()
        config.workdir.mkdir(parents=True, exist_ok=True)
        (config.workdir / "worker.pid").write_text(f"{os.getpid()}\n")  # for drain-local
        self.sandboxes = config.workdir / "sandboxes"
        self.sandboxes.mkdir(exist_ok=True)
        self.cache = Cache(config.cache_dir or config.workdir / "cache")
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] | None = None
        self.inbox = self.ctx.socket(zmq.PULL)
        self._inbox_addr = f"inproc://results-{uuid.uuid4().hex}"
        self.inbox.bind(self._inbox_addr)
        self._push_local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=max(4, int(config.cores) * 2 + 2))
        self.slots: dict[TaskId, Slot] = {}
        self.queue: deque[TaskId] = deque()
        self.started: list[TaskRef] = []
        self.finished: list[tuple[AttemptResult, list[bytes]]] = []
        self.unacked: dict[tuple[TaskId, int], tuple[AttemptResult, list[bytes]]] = {}
        self.requested: set[CacheName] = set()
        self.new_cached: list[CacheName] = []
        self.manager_id: str | None = None
        self.registered = False
        self.last_heard = 0.0
        self.last_sent = 0.0
        self.draining = False
        self.running = True
        self.idle_since = time.time()
        self.base_env = dict(os.environ)
        self.base_env.pop("KUBEVINE_TOKEN", None)  # tasks never see the workflow secret
        self.heartbeat_timeout = 30.0
        self._payloads: dict[TaskId, bytes] = {}
        self._done_q: queue.SimpleQueue[tuple[sandbox.Attempt, AttemptResult]] = queue.SimpleQueue()
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
            resources=self.resources,
            cached=self.cache.names(),
            running=held,
        )
        self._send(Hello(protocol=PROTOCOL_VERSION, token=self.config.token, role="worker", worker=info))
        self.hello_sent = time.time()

    def _send(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        assert self.sock is not None
        self.sock.send_multipart(encode(msg, frames or []), copy=False)
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

    def loop(self) -> int:
        cfg = self.config
        self._connect()
        backoff = 0.1
        first_contact = time.time()
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        assert self.sock is not None
        poller.register(self.sock, zmq.POLLIN)
        while self.running:
            events = dict(poller.poll(200))
            now = time.time()
            if self.inbox in events:
                self._collect_finished()
            if self.sock in events:
                self._drain_socket()
            if self._drain_requested and self.registered:
                self._drain_requested = False
                self._send(Drain())
            self._start_runnable()
            self._flush()
            if not self.registered:
                if cfg.connect_timeout and now - first_contact > cfg.connect_timeout:
                    log.error("worker %s: no manager at %s", self.worker_id, cfg.manager)
                    return 1
                if now - self.hello_sent > backoff:
                    backoff = min(backoff * 2, 5.0)
                    poller.unregister(self.sock)
                    self._connect()
                    poller.register(self.sock, zmq.POLLIN)
                continue
            backoff = 0.1
            first_contact = now
            if now - self.last_heard > self.heartbeat_timeout:
                log.warning("worker %s: manager silent, reconnecting", self.worker_id)
                poller.unregister(self.sock)
                self._connect()
                poller.register(self.sock, zmq.POLLIN)
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
            new_manager = msg.manager_id != self.manager_id
            self.manager_id = msg.manager_id
            self.registered = True
            self.heartbeat_timeout = msg.heartbeat_timeout
            self.config.heartbeat_interval = min(self.config.heartbeat_interval, msg.heartbeat_interval)
            log.info("worker %s registered with manager %s", self.worker_id, msg.manager_id)
            if self.unacked:  # results the manager may not have recorded
                self.finished.extend(self.unacked.values())
                self.unacked.clear()
            if new_manager:
                self.requested.clear()
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
        elif isinstance(msg, FileData):
            self._file_arrived(msg, frames)
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
        if a.spec.payload is not None:
            payload = frame(frames, a.spec.payload)
            a = a.model_copy(update={"spec": a.spec.model_copy(update={"payload": None})})
            self._payloads[tid] = payload or b""
        missing = {s.cache_name for s in a.stage if not self.cache.has(s.cache_name)}
        for b in a.spec.inputs:
            if b.cache_name is not None and not self.cache.has(b.cache_name):
                missing.add(b.cache_name)
        want = [n for n in missing if n not in self.requested]
        if want:
            self.requested.update(want)
            self._send(FileRequest(cache_names=want))
        self.slots[tid] = Slot(a, missing)
        self.queue.append(tid)

    def _file_arrived(self, msg: FileData, frames: list[bytes]) -> None:
        name = msg.cache_name
        self.requested.discard(name)
        if msg.error is not None:
            for tid, slot in list(self.slots.items()):
                if name in slot.missing and slot.attempt is None:
                    self._fail_now(slot, Outcome.INPUT_MISSING, f"input {name}: {msg.error}")
            return
        data = frame(frames, msg.frame)
        self.cache.put_bytes(name, data or b"")
        self.new_cached.append(name)
        for slot in self.slots.values():
            slot.missing.discard(name)

    def _fail_now(self, slot: Slot, outcome: Outcome, error: str) -> None:
        a = slot.assignment
        del self.slots[a.spec.id]
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
            if slot is None:
                continue
            need = slot.assignment.spec.resources
            if slot.missing or not need.fits_in(self.resources - self.used):
                kept.append(tid)
                continue
            self._start(slot)
        self.queue = kept

    def _start(self, slot: Slot) -> None:
        a = slot.assignment
        box = self.sandboxes / f"t{a.spec.id}.{a.attempt}"
        try:
            box.mkdir(parents=True, exist_ok=True)
            for b in a.spec.inputs:
                assert b.cache_name is not None
                self.cache.link_into(b.cache_name, box / b.remote_name)
        except OSError as e:
            sandbox.remove(box)
            self._fail_now(slot, Outcome.SANDBOX_ERROR, f"could not prepare the sandbox: {e}")
            return
        self.used = self.used + a.spec.resources
        att = sandbox.Attempt(a, box)
        slot.attempt = att
        self.started.append(TaskRef(task_id=a.spec.id, attempt=a.attempt))
        self.pool.submit(self._run, att)

    def _run(self, att: sandbox.Attempt) -> None:
        """Executor thread: run the attempt, then post the result to the main loop."""
        try:
            res = sandbox.run_command(att, self.base_env, self.config.stdout_cap)
        except Exception as e:  # a bug of ours: report it, keep the worker alive
            log.exception("worker %s: attempt crashed", self.worker_id)
            a = att.assignment
            res = AttemptResult(
                task_id=a.spec.id, attempt=a.attempt, outcome=Outcome.SANDBOX_ERROR, error=repr(e)
            )
        push = getattr(self._push_local, "sock", None)
        if push is None:
            push = self._push_local.sock = self.ctx.socket(zmq.PUSH)
            push.connect(self._inbox_addr)
        self._done_q.put((att, res))
        push.send(b"")

    def _collect_finished(self) -> None:
        while True:
            try:
                self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while True:
            try:
                att, res = self._done_q.get_nowait()
            except queue.Empty:
                break
            a = att.assignment
            sandbox.remove(att.sandbox)
            slot = self.slots.get(a.spec.id)
            if slot is None or slot.attempt is not att:
                continue  # killed: the manager no longer wants it
            del self.slots[a.spec.id]
            self.used = self.used - a.spec.resources
            if att.killed:
                continue
            self.finished.append((res, att.frames))
        if not self.slots:
            self.idle_since = time.time()

    def _kill(self, ref: TaskRef) -> None:
        slot = self.slots.get(ref.task_id)
        if slot is None or slot.assignment.attempt != ref.attempt:
            return
        if slot.attempt is None:
            del self.slots[ref.task_id]
        else:
            sandbox.kill(slot.attempt)

    def _flush(self) -> None:
        if not self.registered or not (self.started or self.finished or self.new_cached):
            return
        results, frames = [], []
        for res, fr in self.finished:
            base = len(frames)
            frames += fr
            if base:
                res = res.model_copy(
                    update={
                        "output_frame": None if res.output_frame is None else res.output_frame + base,
                        "outputs": [
                            o.model_copy(update={"frame": None if o.frame is None else o.frame + base})
                            for o in res.outputs
                        ],
                    }
                )
            results.append(res)
        for res, fr in self.finished:
            self.unacked[(res.task_id, res.attempt)] = (res, fr)
        self._send(
            WorkerUpdate(started=self.started, results=results, cached=self.new_cached), frames
        )
        self.started, self.finished, self.new_cached = [], [], []

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.attempt is not None:
                sandbox.kill(slot.attempt)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.sock is not None:
            self.sock.close(0)
        self.inbox.close(0)
