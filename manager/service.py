"""The manager service: the I/O shell around the pure core.

One thread, one ZeroMQ ROUTER that clients, workers and admins connect to. Each cycle:
read every message that is waiting, feed them to the core, let the core schedule, write
the cycle's state changes to the store in one call, then send what the core decided. A
message that cannot be decoded, or a peer that did not say hello with the right token,
gets an error back and changes nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import zmq

from kubevine import auth, logs
from kubevine.ids import CacheName, ClientId, WorkerId
from kubevine.manager import dataplane
from kubevine.manager.core import (
    ClientError,
    Core,
    SendAck,
    SendDispatch,
    SendDrain,
    SendForget,
    SendInstall,
    SendKill,
    SendPeerLost,
    SendRemove,
    SendResults,
    Settings,
)
from kubevine.manager.filestore import FileStore
from kubevine.manager.metrics import Counters, MetricsServer
from kubevine.manager.peerfetch import PeerFetcher
from kubevine.manager.persist import Persister
from kubevine.manager.states import FINAL, TaskState, WorkerState
from kubevine.manager.store import LeaseHeld, MemoryStore, StateStore
from kubevine.manager.txlog import TxLog
from kubevine.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientResult,
    Dispatch,
    Drain,
    DrainWorkers,
    ErrorMsg,
    FetchedFile,
    FetchFile,
    FileData,
    FileRequest,
    ForgetFiles,
    Goodbye,
    Heartbeat,
    Hello,
    IdBlock,
    IdBlockRequest,
    InstallLibrary,
    Kill,
    LibraryStatus,
    PeerLost,
    ProtocolError,
    PutFiles,
    Refused,
    RemoveLibrary,
    Results,
    ResultsAck,
    StatusReply,
    StatusRequest,
    Submit,
    TaskRef,
    UndeclareFiles,
    UpdateAck,
    Welcome,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
    frame,
    replace,
    send,
    walk_bindings,
)
from kubevine.resources import Tally
from kubevine.stats import Failure, LibraryView, Load, ManagerStatus, Perf, WorkerStatus
from kubevine.txformat import q

log = logging.getLogger(__name__)

# A worker keeps each result until told it is stored. One acknowledgement covers the updates of
# ACK_DELAY seconds (or ACK_BATCH results), so a busy worker is not interrupted once per update
# and a single call's reply is not followed by a second message on the same path.
ACK_DELAY = 0.05
ACK_BATCH = 5000

MAX_STORED_FILE = 16 << 20  # client files up to this size are kept in the state store too


@dataclass
class ManagerConfig:
    """Settings of one manager process (the CLI and LocalCluster fill it)."""

    name: str = "default"  # the workflow name: the Redis prefix, and what clients reattach to
    host: str = "0.0.0.0"  # address to bind (KUBEVINE_BIND_HOST)
    port: int = 9123  # 0 picks a free port (written to <workdir>/address)
    token: str = ""
    workdir: Path = Path(".")
    redis_url: str | None = None
    redis_password: str | None = None
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    recover_grace: float = 30.0
    lease_ttl: float = 15.0  # a dead manager's workflow can be taken over this long after
    lease_wait: float | None = None  # how long to wait for a held lease (default: its TTL + 5 s)
    redis_outage_grace: float = 60.0  # seconds of Redis outage after which new work is refused
    stats_interval: float = 2.0
    prefetch: int = 3
    transfers_per_source: int = 4  # concurrent transfers one source serves (a popular file fans out)
    metrics_port: int | None = None  # serve /metrics and /healthz over HTTP (0: any free port)
    transactions_stdout: bool = False  # also echo the transactions log to stdout
    transactions_json: bool = False  # ... as JSON objects, one a line


@dataclass
class Peer:
    role: str
    id: str


class ManagerService:
    def __init__(self, config: ManagerConfig, store: StateStore | None = None) -> None:
        self.config = config
        self.manager_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        logs.bind(workflow=config.name, manager=self.manager_id)  # ids in every log line from here on
        self.started = time.time()
        if store is None:
            if config.redis_url:
                from kubevine.manager.redis_store import RedisStore

                store = RedisStore(config.redis_url, config.name, config.redis_password)
            else:
                store = MemoryStore()
        self.store = store
        self.core = Core(
            Settings(
                heartbeat_timeout=config.heartbeat_timeout,
                recover_grace=config.recover_grace,
                prefetch=config.prefetch,
                transfers_per_source=config.transfers_per_source,
            )
        )
        self.files = FileStore(config.workdir / "files")
        self.core.files_received(self.files.names())
        self.txlog = TxLog(
            config.workdir / "transactions.log",
            self.manager_id,
            echo=sys.stdout if config.transactions_stdout else None,
            echo_json=config.transactions_json,
        )
        self.counters = Counters()
        self.metrics: MetricsServer | None = None
        self.peers: dict[bytes, Peer] = {}
        self.routes: dict[tuple[str, str], bytes] = {}
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.running = True
        self.address = ""
        self.recent_failures: list[Failure] = []
        # the persister's writer thread wakes the loop when a batch is durable
        self._wake_addr = f"inproc://manager-wake-{uuid.uuid4().hex}"
        self._wake_rx = self.ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self.ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self.persister = Persister(
            self.store,
            self._wake,
            owner=self.manager_id,
            lease_ttl=config.lease_ttl,
            stats_interval=config.stats_interval,
        )
        # sent once this cycle is durable
        self._deferred: list[SendAck | tuple[bytes, _Msg] | tuple[bytes, _Msg, list[bytes]]] = []
        self._acks: dict[WorkerId, list[TaskRef]] = {}  # stored results, not yet acknowledged
        self._acks_held = 0
        self._acks_due: float | None = None  # when the oldest of them must go out
        self._unwelcomed: set[str] = set()  # clients whose welcome waits for durability
        self._refusing = False  # the store has been away longer than redis_outage_grace
        self.peer_fetch = PeerFetcher(self.ctx, self._wake_addr)  # m.fetch_file of files workers hold
        self.fetch_clients: dict[tuple[bytes, int], ClientId] = {}  # fetches under way -> who asked

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        self.epoch = self._acquire_lease()
        # bind at once (peers may queue messages while the state loads), then load
        if cfg.port == 0:
            port = self.sock.bind_to_random_port(f"tcp://{cfg.host}")
        else:
            self.sock.bind(f"tcp://{cfg.host}:{cfg.port}")
            port = cfg.port
        host = cfg.host if cfg.host not in ("0.0.0.0", "*") else socket.gethostname()
        self.address = f"{host}:{port}"
        self.port = port
        self.txlog.write(
            [
                f"MANAGER {self.manager_id} started workflow={cfg.name} port={port} "
                f"durable={str(self.store.durable).lower()} epoch={self.epoch}"
            ]
        )
        t0 = time.monotonic()
        snap = self.store.load()
        self.core.now = time.time()
        have = set(self.files.names())
        for name, data in snap.files.items():  # files clients sent to an earlier manager
            if name not in have:
                self.files.put(name, data)
        self.core.files_received(snap.files)
        self.core.restore(snap)
        if snap.records or snap.libraries or snap.workers:
            log.info(
                "workflow %s: reloaded %d task(s), %d worker(s), %d library(ies), %d file(s) "
                "and %d replica(s) from the store in %.3fs",
                cfg.name,
                len(snap.records),
                len(snap.workers),
                len(snap.libraries),
                len(snap.files),
                len(snap.replicas),
                time.monotonic() - t0,
            )
            self.txlog.write(
                [
                    f"MANAGER {self.manager_id} restored tasks={len(snap.records)}"
                    f" workers={len(snap.workers)} libraries={len(snap.libraries)}"
                    f" files={len(snap.files)} replicas={len(snap.replicas)}"
                    f" seconds={time.monotonic() - t0:.3f}"
                ]
            )
        write_atomic(
            cfg.workdir / "address", f"{cfg.host if cfg.host != '0.0.0.0' else '127.0.0.1'}:{port}\n"
        )
        if cfg.metrics_port is not None:
            stale = max(60.0, 10 * cfg.stats_interval)
            self.metrics = MetricsServer(cfg.host, cfg.metrics_port, stale_after=stale)
            self.metrics.update(self.status())
            self.metrics.start()
            write_atomic(cfg.workdir / "metrics-address", f"{_local(cfg.host)}:{self.metrics.port}\n")
            log.info("manager %s: /metrics and /healthz on port %d", self.manager_id, self.metrics.port)
        log.info(
            "manager %s serving workflow %s on port %d (state: %s, epoch %d)",
            self.manager_id,
            cfg.name,
            port,
            f"redis at {getattr(self.store, 'url', '?')}" if self.store.durable else "memory",
            self.epoch,
        )

    def _acquire_lease(self) -> int:
        """Take the workflow's lease, waiting while a predecessor's lease runs out (a manager
        that was killed leaves its lease to expire); refuse if it is still held after that."""
        cfg = self.config
        deadline = time.monotonic() + (cfg.lease_wait if cfg.lease_wait is not None else cfg.lease_ttl + 5)
        logged = False
        while True:
            try:
                return self.store.acquire(self.manager_id, cfg.lease_ttl)
            except LeaseHeld as e:
                if time.monotonic() > deadline or not self.running:
                    raise
                if not logged:
                    log.warning("%s; waiting for it to expire", e)
                    logged = True
                time.sleep(0.2)

    def stop(self, *_: object) -> None:
        self.running = False

    def _wake(self) -> None:
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        self.peer_fetch.close()
        self.persister.flush()
        self._drain_wake()
        self._send_durable()
        self._send_acks()
        self.persister.close()
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        self.store.release(self.manager_id)
        self.store.close()
        if self.metrics is not None:
            self.metrics.close()
        self.txlog.write([f"MANAGER {self.manager_id} stopped"])
        self.txlog.close()
        self.sock.close(0)

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        try:
            self.loop()
        finally:
            self.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("manager %s: signal %d, stopping", self.manager_id, signum)
        self.running = False

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        cfg = self.config
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_tick = 0.0
        next_stats = 0.0
        while self.running:
            now = time.time()
            wait = max(0.0, min(next_tick, next_stats, self._acks_due or next_tick) - now)
            events = poller.poll(int(wait * 1000) + 1 if wait > 0 else 0)
            now = time.time()
            self.core.now = now
            if events:
                self._drain_socket()
                if any(s is self._wake_rx for s, _ in events):
                    self._drain_wake()
                    self._deliver_fetches()
                self._send_durable()
            if self.persister.fatal is not None:
                raise self.persister.fatal
            if now >= next_tick:
                self.core.tick(now)
                self._heartbeat()
                self._watch_store()
                next_tick = now + min(cfg.heartbeat_interval, 1.0)
            if self.persister.wiped and not self.persister.reseed_requested:
                self._reseed()
            self.core.schedule()
            self._flush()
            if self._acks_due is not None and (now >= self._acks_due or self._acks_held >= ACK_BATCH):
                self._send_acks()
            if now >= next_stats:
                self.counters.sample(now)
                st = self.status()
                self.persister.publish(st.model_dump_json())
                self.txlog.perf(st)
                if self.metrics is not None:
                    self.metrics.update(st)
                next_stats = now + cfg.stats_interval

    def _watch_store(self) -> None:
        """Past ``redis_outage_grace`` of outage, refuse new work (and say so once)."""
        outage = self.persister.outage
        refusing = outage > self.config.redis_outage_grace
        if refusing and not self._refusing:
            log.error(
                "state store unreachable for %.0fs (more than --redis-outage-grace %.0fs): refusing "
                "new work until it returns; running work goes on and nothing stored is lost",
                outage,
                self.config.redis_outage_grace,
            )
            self.txlog.write([f"MANAGER {self.manager_id} refusing-work cause=store-unavailable"])
        elif self._refusing and not refusing:
            log.warning("state store is back: accepting new work again")
            self.txlog.write([f"MANAGER {self.manager_id} accepting-work"])
        self._refusing = refusing

    def _reseed(self) -> None:
        """The store forgot the workflow: write everything we hold again, in one batch."""
        self._flush()  # this cycle's changes first (the full batch subsumes them anyway)
        batch = self.core.full_batch()
        for name in self.files.names():
            data = self.files.get(name)
            if data is not None and len(data) <= MAX_STORED_FILE:
                batch.files[name] = data
        log.warning(
            "manager %s: the state store lost workflow %s; writing it again (%d task(s))",
            self.manager_id,
            self.config.name,
            len(batch.records),
        )
        self.txlog.write([f"MANAGER {self.manager_id} reseed tasks={len(batch.records)}"])
        self.persister.submit(batch, [])

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _send_durable(self) -> None:
        for item in self.persister.done():
            if isinstance(item, SendAck):  # held a little: one ack for many updates
                self._acks.setdefault(item.worker, []).extend(item.tasks)
                self._acks_held += len(item.tasks)
                if self._acks_due is None:
                    self._acks_due = time.time() + ACK_DELAY
            else:
                if isinstance(item[1], Welcome):
                    peer = self.peers.get(item[0])
                    if peer is not None:
                        self._unwelcomed.discard(peer.id)
                self._send(*item)

    def _send_acks(self) -> None:
        """Tell workers which results are stored (they may forget them now)."""
        acks, self._acks = self._acks, {}
        self._acks_due, self._acks_held = None, 0
        for wid, refs in acks.items():
            self._send_to("worker", wid, UpdateAck(tasks=refs))

    def _drain_socket(self) -> None:
        for _ in range(5000):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            ident, body = parts[0], parts[1:]
            try:
                msg, frames = decode(body)
            except ProtocolError as e:
                who = self.peers.get(ident)
                log.warning("malformed message from %s: %s", who.id if who else "an unknown peer", e)
                self._send(ident, ErrorMsg(code="malformed", message=str(e)))
                continue
            try:
                self._handle(ident, msg, frames)
            except ProtocolError as e:
                log.warning("bad message %s: %s", msg.type, e)
                self._send(ident, ErrorMsg(code="malformed", message=str(e)))

    def _flush(self) -> None:
        batch, out = self.core.take()
        after: list[SendAck | tuple[bytes, _Msg] | tuple[bytes, _Msg, list[bytes]]] = [
            i for i in out if isinstance(i, SendAck)
        ]
        after += self._deferred
        self._deferred = []
        self.txlog.write(self.core.transactions)
        self.core.transactions.clear()
        for ins in out:
            if isinstance(ins, SendDispatch):
                self.counters.dispatch(ins.tasks)
                self._send_to("worker", ins.worker, Dispatch(tasks=ins.tasks), ins.frames)
            elif isinstance(ins, SendResults):
                res: list[ClientResult] = []
                frames: list[bytes] = []
                for r, fr in ins.results:
                    base = len(frames)
                    frames += fr
                    if base:
                        r = _shift(r, base)
                    res.append(r)
                    if r.state == "failed" and len(self.recent_failures) < 1000:
                        self.recent_failures.append(
                            Failure(
                                task_id=r.task_id,
                                outcome=r.outcome.value,
                                error=r.error,
                                exit_code=r.exit_code,
                            )
                        )
                self.counters.result_messages += 1
                ident = self.routes.get(("client", ins.client))
                if ins.client in self._unwelcomed and ident is not None:
                    after.append((ident, Results(results=res), frames))  # after its welcome
                else:
                    self._send_to("client", ins.client, Results(results=res), frames)
            elif isinstance(ins, SendKill):
                self._send_to("worker", ins.worker, Kill(tasks=ins.tasks))
            elif isinstance(ins, SendForget):
                self._send_to("worker", ins.worker, ForgetFiles(cache_names=ins.names))
            elif isinstance(ins, SendDrain):
                self._send_to("worker", ins.worker, Drain())
            elif isinstance(ins, SendInstall):
                lib = self.core.libraries.get(ins.library)
                if lib is not None:
                    self._send_to("worker", ins.worker, InstallLibrary(spec=lib.spec, frame=0), [lib.payload])
            elif isinstance(ins, SendRemove):
                self._send_to("worker", ins.worker, RemoveLibrary(name=ins.library))
            elif isinstance(ins, SendPeerLost):
                self._send_to("worker", ins.worker, PeerLost(worker=ins.lost, address=ins.address))
            elif isinstance(ins, ClientError):
                self._send_to(
                    "client",
                    ins.client,
                    ErrorMsg(code=ins.code, message=ins.message, task_ids=ins.task_ids),
                )
        self.persister.submit(batch, after)
        self._send_durable()  # an in-memory store is durable at once

    # ------------------------------------------------------------------ sending

    def _send(self, ident: bytes, msg: _Msg, frames: list[bytes] | None = None) -> bool:
        try:
            send(self.sock, [ident, *encode(msg, frames or [])])
            return True
        except zmq.ZMQError as e:  # EHOSTUNREACH: the peer is gone
            log.debug("cannot send %s: %s", msg.__class__.__name__, e)
            return False

    def _send_to(self, role: str, pid: str, msg: _Msg, frames: list[bytes] | None = None) -> None:
        ident = self.routes.get((role, pid))
        if (ident is None or not self._send(ident, msg, frames)) and role == "client":
            self.core.client_disconnected(ClientId(pid))

    def _heartbeat(self) -> None:
        hb = encode(Heartbeat(manager_id=self.manager_id))
        for (role, pid), ident in list(self.routes.items()):
            if role == "client" and pid in self._unwelcomed:
                continue  # its welcome comes first
            try:
                self.sock.send_multipart([ident, *hb])
            except zmq.ZMQError:
                pass

    # ------------------------------------------------------------------ receiving

    def _handle(self, ident: bytes, msg: object, frames: list[bytes]) -> None:
        if isinstance(msg, Hello):
            self._hello(ident, msg)
            return
        peer = self.peers.get(ident)
        if peer is None:
            self._send(ident, ErrorMsg(code="not_registered", message="say hello first"))
            return
        core = self.core
        if peer.role == "worker":
            wid = WorkerId(peer.id)
            if wid not in core.workers:
                # declared lost while it was silent (paused, partitioned): its tasks went
                # elsewhere; it must say hello again and report what it holds
                self._forget(ident)
                self._send(
                    ident, ErrorMsg(code="not_registered", message="you were declared lost; say hello")
                )
                return
            core.worker_seen(wid)
            if isinstance(msg, WorkerUpdate):
                self.counters.attempts_ended(msg.results)
                core.worker_update(
                    wid, msg.started, msg.results, frames, msg.cached, msg.evicted, msg.transfers
                )
                for rec in msg.transfers:
                    if rec.ok and rec.source != "node":
                        self.counters.transfer(rec.source, rec.bytes)
            elif isinstance(msg, FileRequest):
                self._serve_files(ident, msg.cache_names, wid)
            elif isinstance(msg, LibraryStatus):
                core.library_status(wid, msg.name, msg.state, msg.error)
            elif isinstance(msg, Drain):
                core.drain([wid])
            elif isinstance(msg, Goodbye):
                log.info("worker %s left: %s", wid, msg.reason)
                core.worker_lost(wid, f"left ({msg.reason})")
                self._forget(ident)
            elif not isinstance(msg, Heartbeat):
                self._send(
                    ident,
                    ErrorMsg(code="unexpected", message=f"workers do not send {msg.__class__.__name__}"),
                )
            return
        cid = ClientId(peer.id)
        if isinstance(msg, Submit) and self._refusing:
            ids = [s.id for s in msg.tasks]
            self._send(
                ident,
                ErrorMsg(
                    code="store_unavailable",
                    message=(
                        f"the state store has been unreachable for {self.persister.outage:.0f}s "
                        f"(longer than the manager's --redis-outage-grace of "
                        f"{self.config.redis_outage_grace:.0f}s): {len(ids)} task(s) not accepted; "
                        "submit them again once it is back (tasks accepted before are safe)"
                    ),
                    task_ids=ids,
                ),
            )
        elif isinstance(msg, Submit):
            # a spec keeps the payload index it came with; dispatches carry their own
            core.submit(cid, msg.tasks, [frame(frames, s.payload) for s in msg.tasks])
        elif isinstance(msg, PutFiles):
            for f in msg.files:
                data = frame(frames, f.frame)
                assert data is not None
                if len(data) != f.size:
                    raise ProtocolError(f"file {f.cache_name}: {len(data)} bytes sent, {f.size} declared")
                self.files.put(f.cache_name, data)
                if len(data) <= MAX_STORED_FILE:
                    core.keep_file(f.cache_name, data)
                else:
                    log.warning(
                        "file %s (%d bytes) is too large to keep in the state store; a new manager "
                        "gets it from a worker's cache or the client",
                        f.cache_name,
                        len(data),
                    )
            core.files_received(f.cache_name for f in msg.files)
        elif isinstance(msg, ResultsAck):
            core.results_acked(cid, msg.task_ids)
        elif isinstance(msg, InstallLibrary):
            payload = frame(frames, msg.frame)
            core.install_library(cid, msg.spec, payload or b"")
        elif isinstance(msg, RemoveLibrary):
            core.remove_library(cid, msg.name)
        elif isinstance(msg, Cancel):
            core.cancel(cid, msg.task_ids, msg.tag)
        elif isinstance(msg, UndeclareFiles):
            core.undeclare(cid, msg.cache_names)
        elif isinstance(msg, IdBlockRequest):
            first, count = core.grant_ids()
            self._deferred.append((ident, IdBlock(first_task_id=first, count=count)))
        elif isinstance(msg, StatusRequest):
            self._send(ident, StatusReply(status=self.status().model_dump_json()))
        elif isinstance(msg, FetchFile):
            self._fetch_for_client(ident, cid, msg)
        elif isinstance(msg, DrainWorkers):
            core.drain(msg.worker_ids)
        elif isinstance(msg, Goodbye):
            core.client_disconnected(cid)
            self._unwelcomed.discard(cid)
            self._forget(ident)
        elif not isinstance(msg, Heartbeat):
            self._send(
                ident, ErrorMsg(code="unexpected", message=f"clients do not send {msg.__class__.__name__}")
            )

    def _hello(self, ident: bytes, msg: Hello) -> None:
        if msg.protocol != PROTOCOL_VERSION:
            reason = (
                f"protocol version mismatch: peer speaks {msg.protocol}, manager speaks {PROTOCOL_VERSION}"
            )
            log.warning("refused a %s: %s", msg.role, reason)
            self._send(ident, Refused(reason=reason))
            return
        if not auth.same(msg.token, self.config.token):
            log.warning("refused a %s connection: wrong or missing token", msg.role)
            self._send(ident, Refused(reason="invalid token for this workflow"))
            return
        self._forget(ident)
        cfg = self.config
        welcome = Welcome(
            workflow=cfg.name,
            manager_id=self.manager_id,
            heartbeat_interval=cfg.heartbeat_interval,
            heartbeat_timeout=cfg.heartbeat_timeout,
        )
        if msg.role == "worker":
            if msg.worker is None:
                raise ProtocolError("a worker hello must describe the worker")
            wid = msg.worker.worker_id
            self._bind(ident, "worker", wid)
            self._send(ident, welcome)
            self.core.worker_connected(msg.worker)
            log.info(
                "worker %s connected from %s (node %s, %s)",
                wid,
                msg.worker.host,
                msg.worker.node,
                msg.worker.resources.describe(),
            )
        else:
            cid = msg.client or ClientId(f"anon-{uuid.uuid4().hex[:8]}")
            self._bind(ident, msg.role, cid)
            if msg.role == "client":
                first, count = self.core.client_connected(ClientId(cid))
                welcome.first_task_id, welcome.id_block = first, count
                if msg.attach:  # a client process restarted: what it submitted and not collected
                    welcome.tasks = [
                        t.spec
                        for t in self.core.tasks.values()
                        if t.client == cid
                        and (t.result is not None or (t.state not in FINAL and not t.rerun))
                    ]
                self._unwelcomed.add(cid)  # its results go out after the welcome
                if self._refusing:  # its welcome must wait for the store: say so now
                    self._send(
                        ident,
                        ErrorMsg(
                            code="store_unavailable",
                            message=(
                                f"the state store has been unreachable for {self.persister.outage:.0f}s: "
                                "a client can be welcomed only once it is back"
                            ),
                        ),
                    )
                self._deferred.append((ident, welcome))  # its id block must be durable first
            else:
                self._send(ident, welcome)

    def _bind(self, ident: bytes, role: str, pid: str) -> None:
        old = self.routes.get((role, pid))
        if old is not None and old != ident:
            self.peers.pop(old, None)
        self.peers[ident] = Peer(role, pid)
        self.routes[(role, pid)] = ident

    def _forget(self, ident: bytes) -> None:
        peer = self.peers.pop(ident, None)
        if peer is not None and self.routes.get((peer.role, peer.id)) == ident:
            del self.routes[(peer.role, peer.id)]

    def _serve_files(self, ident: bytes, names: list[CacheName], wid: WorkerId) -> None:
        for name in names:
            data = self.files.get(name)
            if data is None:  # the worker reports the failed transfer and tries its next source
                self._send(ident, FileData(cache_name=name, error=f"the manager has no file {name}"))
            else:  # the worker reports the arrival (TRANSFER line, counters)
                self._send(ident, FileData(cache_name=name, frame=0, directory=_is_dir(name)), [data])

    def _fetch_for_client(self, ident: bytes, cid: ClientId, msg: FetchFile) -> None:
        """``m.fetch_file``: from the manager's own store, else from a worker that holds it."""
        name = msg.cache_name
        data = self.files.get(name)
        if data is not None:
            reply = FetchedFile(
                request=msg.request, cache_name=name, frame=0, directory=_is_dir(name), source="manager"
            )
            self._send(ident, reply, [data])
            self._fetch_logged(name, "manager", None, cid, len(data), 0.0)
            return
        sources, why = dataplane.fetch_sources(self.core, name)
        if not sources:
            self._send(ident, FetchedFile(request=msg.request, cache_name=name, error=why))
            return
        self.peer_fetch.submit(ident, msg.request, name, sources)
        self.fetch_clients[(ident, msg.request)] = cid

    def _deliver_fetches(self) -> None:
        for f in self.peer_fetch.done():
            cid = self.fetch_clients.pop((f.ident, f.request), ClientId("-"))
            reply = FetchedFile(request=f.request, cache_name=f.name, directory=f.directory, source=f.source)
            if f.data is None:
                reply.error = f.error
                self._send(f.ident, reply)
                continue
            reply.frame = 0
            self._send(f.ident, reply, [f.data])
            self._fetch_logged(f.name, "peer", f.source, cid, len(f.data), f.seconds)

    def _fetch_logged(
        self, name: CacheName, source: str, peer: str | None, cid: str, size: int, seconds: float
    ) -> None:
        self.txlog.write(
            [
                f"TRANSFER {name} fetched source={source} peer={q(peer)} dest={q('client:' + cid)}"
                f" bytes={size} seconds={seconds:.3f}"
            ]
        )

    # ------------------------------------------------------------------ status

    def status(self) -> ManagerStatus:
        core = self.core
        now = time.time()
        # workers holding the only copy of a temp file some task still needs: never drain them
        needed = {n for n, waiting in core.waiting_for.items() if waiting}
        for t in core.tasks.values():
            if t.state not in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED):
                needed.update(
                    b.cache_name for b in walk_bindings(t.spec.inputs) if b.cache_name in core.producers
                )
        unique_holders = {
            next(iter(held))
            for name, held in core.catalog.holders.items()
            if len(held) == 1 and name in needed
        }
        waiting, running, largest = Tally(), Tally(), Tally()
        n_waiting = n_running = 0
        for t in core.tasks.values():
            r = t.spec.resources
            if t.state in (TaskState.READY, TaskState.WAITING, TaskState.RETRYING):
                n_waiting += 1
                waiting.add(r)
                largest.cores = max(largest.cores, r.cores)
                largest.memory = max(largest.memory, r.memory)
                largest.disk = max(largest.disk, r.disk)
                largest.gpus = max(largest.gpus, r.gpus)
            elif t.state in (TaskState.DISPATCHED, TaskState.RUNNING):
                n_running += 1
                running.add(r)
        return ManagerStatus(
            workflow=self.config.name,
            manager_id=self.manager_id,
            address=self.address,
            durable=self.store.durable,
            time=now,
            started=self.started,
            tasks={s.value: n for s, n in core.counts.items()},
            totals=dict(core.totals),
            unschedulable=len(core.unschedulable),
            demand=waiting.snapshot(),
            waiting=_load(n_waiting, waiting),
            running=_load(n_running, running),
            largest_waiting=largest.snapshot(),
            workers=[
                WorkerStatus(
                    id=w.id,
                    node=w.info.node,
                    host=w.info.host,
                    state=w.state.value,
                    resources=w.info.resources,
                    committed=w.committed.snapshot(),
                    running=len(w.tasks) - w.queued,
                    queued=w.queued,
                    idle_seconds=None if w.idle_since is None else now - w.idle_since,
                    idle_since=w.idle_since,
                    draining=w.state == WorkerState.DRAINING,
                    pod=w.info.pod,
                    holds_unique_temps=w.id in unique_holders,
                    cached_files=len(w.cached),
                )
                for w in core.workers.values()
                if w.state != WorkerState.LOST
            ],
            clients=len(core.connected_clients),
            recent_failures=self.recent_failures[-20:],
            perf=self._perf(),
            libraries=self._libraries(),
            store_outage=self.persister.outage,
            refusing_work=self._refusing,
        )

    def _libraries(self) -> list[LibraryView]:
        views = {
            name: LibraryView(
                name=name,
                mode=lib.spec.exec_mode,
                slots=lib.spec.slots,
                functions=list(lib.spec.functions),
                waiting_calls=len(lib.ready),
                broken=lib.broken,
            )
            for name, lib in self.core.libraries.items()
        }
        for w in self.core.workers.values():
            for name, inst in w.libs.items():
                v = views.get(name)
                if v is not None:
                    v.instances[inst.state] = v.instances.get(inst.state, 0) + 1
                    v.active_calls += inst.active
        return list(views.values())

    def _perf(self) -> Perf:
        total = in_use = 0.0
        for w in self.core.workers.values():
            if w.state in (WorkerState.CONNECTED, WorkerState.DRAINING):
                total += w.info.resources.cores
                in_use += w.committed.cores
        return self.counters.perf(total, in_use)


def _is_dir(name: CacheName) -> bool:
    """Whether a file the client sent is a directory (its name says so; it is stored as a tar)."""
    return name.startswith("dir-")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a concurrent reader sees the old file or the whole new one, never ""."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _local(host: str) -> str:
    """An address this machine can reach a socket bound to ``host`` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "*", "") else host


def _load(n: int, t: Tally) -> Load:
    return Load(tasks=n, cores=t.cores, memory=t.memory, disk=t.disk, gpus=t.gpus)


def _shift(r: ClientResult, base: int) -> ClientResult:
    """The same result with its frame indices moved by ``base`` (results share a message)."""
    if r.outputs:
        outputs = [o if o.frame is None else replace(o, frame=o.frame + base) for o in r.outputs]
        return replace(
            r, output_frame=None if r.output_frame is None else r.output_frame + base, outputs=outputs
        )
    return r if r.output_frame is None else replace(r, output_frame=r.output_frame + base)
