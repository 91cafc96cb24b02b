"""The manager service: the I/O shell around the pure core.

One thread, one ZeroMQ ROUTER that clients, workers and admins connect to (made through the
workflow's credentials: a size limit on every message, CURVE when the wire is encrypted;
:mod:`kubevine.manager.wire`). Each cycle: read every message that is waiting, feed them to
the core (:mod:`kubevine.manager.receive` decodes them by their sender's role), let the core
schedule, write the cycle's state changes to the store in one call, then send what the core
decided. A message that cannot be decoded, or a peer that did not say hello with the right
token, gets an error back and changes nothing else (:mod:`kubevine.manager.sessions`). Files
move through the manager a piece at a time (:mod:`kubevine.manager.uploads`,
:mod:`kubevine.manager.fetches`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from types import FrameType
from typing import Any, assert_never

import zmq

from kubevine import auth, logs, txformat
from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager import events, recovery, status
from kubevine.manager.config import ManagerConfig, write_atomic
from kubevine.manager.core import Core, Settings
from kubevine.manager.fetches import Fetches
from kubevine.manager.filestore import SPOOL, FileStore
from kubevine.manager.instructions import (
    ClientError,
    SendAck,
    SendDispatch,
    SendDrain,
    SendForget,
    SendIdBlock,
    SendInstall,
    SendKill,
    SendPeerLost,
    SendRemove,
    SendResults,
    SendWelcome,
)
from kubevine.manager.loader import Loader, NotLoadedYet
from kubevine.manager.metrics import Counters, MetricsServer
from kubevine.manager.peerfetch import PeerFetcher
from kubevine.manager.peers import Role
from kubevine.manager.persist import Persister
from kubevine.manager.receive import Receiver
from kubevine.manager.sessions import Sessions
from kubevine.manager.store import (
    LeaseHeld,
    MemoryStore,
    StateStore,
    StoreError,
    StoreUnreachable,
    head_counts,
)
from kubevine.manager.txlog import TxLog
from kubevine.manager.uploads import Uploads
from kubevine.manager.wire import ManagerSocket
from kubevine.netaddr import local_address
from kubevine.protocol import (
    ClientResult,
    Dispatch,
    Drain,
    ErrorMsg,
    ForgetFiles,
    IdBlock,
    InstallLibrary,
    Kill,
    PeerLost,
    RemoveLibrary,
    Results,
    TaskRef,
    UpdateAck,
    Welcome,
    _Msg,
    replace,
)
from kubevine.stats import Failure, ManagerStatus

__all__ = ["ManagerConfig", "ManagerService", "write_atomic"]

log = logging.getLogger(__name__)

# A worker keeps each result until told it is stored. One acknowledgement covers the updates of
# ACK_DELAY seconds (or ACK_BATCH results), so a busy worker is not interrupted once per update
# and a single call's reply is not followed by a second message on the same path.
ACK_DELAY = 0.05
ACK_BATCH = 5000

BACKLOG_PASS_EVERY = 0.05  # seconds between scheduling passes while unread messages wait

MAX_STORED_FILE = 16 << 20  # client files up to this size are kept in the state store too


class ManagerService:
    def __init__(
        self, config: ManagerConfig, store: StateStore | None = None, *, record: bool = False
    ) -> None:
        """Serve ``config``'s workflow from ``store`` (Redis when the config names one, else
        memory); ``record``: the core keeps a journal of its events (tests replay it)."""
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
            ),
            record=record,
        )
        config.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.files = FileStore(config.workdir / "files")
        self.uploads = Uploads(self.files)
        self.txlog = TxLog(
            config.workdir / "transactions.log",
            self.manager_id,
            echo=sys.stdout if config.transactions_stdout else None,
            echo_json=config.transactions_json,
        )
        self.counters = Counters()
        self.metrics: MetricsServer | None = None
        self.loader: Loader | None = None  # a large store's tasks, loading while the manager serves
        self.credentials = auth.Credentials(config.token, config.encrypt)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.wire = ManagerSocket(self.ctx, self.credentials)
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
        self._acks: dict[WorkerId, list[TaskRef]] = {}  # stored results, not yet acknowledged
        self._acks_held = 0
        self._acks_due: float | None = None  # when the oldest of them must go out
        self._refusing = False  # the store has been away longer than redis_outage_grace
        self.sessions = Sessions(
            config, self.core, self.wire, self._welcome, self._why_refusing, self._loading
        )
        self.peers = self.sessions.peers
        # m.fetch_file of files workers hold: pulled in pieces into the spool, served from there
        fetcher = PeerFetcher(self.ctx, self._wake_addr, self.credentials, self.files.work_dir(SPOOL))
        self.fetches = Fetches(self.files, fetcher, self.wire.send, self._fetch_logged)
        self.receiver = Receiver(self)
        self.turns = Turns()  # how long loop turns take, and what a slow one spent its time on

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        self.epoch = self._acquire_lease()
        # bind at once (peers may queue messages while the state loads), then load
        port = self.wire.bind(cfg.host, cfg.port)
        host = cfg.host if cfg.host not in ("0.0.0.0", "*") else socket.gethostname()
        self.address = f"{host}:{port}"
        self.port = port
        self.txlog.write(
            [txformat.manager_started(self.manager_id, cfg.name, port, self.store.durable, self.epoch)]
        )
        t0 = time.monotonic()
        stored = self.store.count_tasks()
        sliced = stored > cfg.restore_at_once
        snap = self.store.load_head() if sliced else self.store.load()
        core = self.core
        core.handle(events.Clock(time.time()))
        have = self.files.names()
        known = set(have)
        for name, data in snap.files.items():  # files clients sent to an earlier manager
            if name not in known:
                self.files.put(name, data)
        core.handle(events.FilesArrived(tuple(dict.fromkeys([*have, *snap.files]))))
        core.handle(events.Restored(snap, whole=not sliced))
        if sliced:
            self.loader = Loader(self.store, core, head_counts(snap), stored, t0)
            log.info(
                "workflow %s: %d task(s) in the store; serving while they load (--restore-at-once %d)",
                cfg.name,
                stored,
                cfg.restore_at_once,
            )
        elif snap.records or snap.libraries or snap.workers:
            self._restored(len(snap.records), head_counts(snap), time.monotonic() - t0)
        write_atomic(cfg.workdir / "address", f"{local_address(cfg.host)}:{port}\n")
        if cfg.metrics_port is not None:
            stale = max(60.0, 10 * cfg.stats_interval)
            self.metrics = MetricsServer(cfg.host, cfg.metrics_port, stale_after=stale)
            self.metrics.update(self.status())
            self.metrics.start()
            write_atomic(cfg.workdir / "metrics-address", f"{local_address(cfg.host)}:{self.metrics.port}\n")
            log.info("manager %s: /metrics and /healthz on port %d", self.manager_id, self.metrics.port)
        log.info(
            "manager %s serving workflow %s on port %d (state: %s, epoch %d%s)",
            self.manager_id,
            cfg.name,
            port,
            f"redis at {getattr(self.store, 'url', '?')}" if self.store.durable else "memory",
            self.epoch,
            ", encrypted" if cfg.encrypt else "",
        )

    def _restored(self, tasks: int, others: tuple[int, int, int, int], seconds: float) -> None:
        """Say what was reloaded: ``others`` counts the workers, libraries, files and replicas."""
        counts = (tasks, *others)
        log.info(
            "workflow %s: reloaded %d task(s), %d worker(s), %d library(ies), %d file(s) "
            "and %d replica(s) from the store in %.3fs",
            self.config.name,
            *counts,
            seconds,
        )
        self.txlog.write([txformat.manager_restored(self.manager_id, *counts, seconds)])

    def _loading(self, named: Iterable[TaskId]) -> str | None:
        """While a restore in slices lasts: load ``named`` at once (NotLoadedYet if the store
        cannot be read now); how far the load is."""
        if self.loader is None:
            return None
        if not self.loader.named_tasks(named):
            raise NotLoadedYet
        return self.loader.progress()

    def _load_slice(self) -> None:
        """One slice of a large store's tasks; at the last, the restore is done."""
        loader = self.loader
        assert loader is not None
        if not loader.step():
            return
        r = self.core.restoring
        loaded = r.loaded if r is not None else 0
        self.core.handle(events.RestoreDone())
        self.loader = None
        log.info(
            "workflow %s: all %d task(s) loaded, in %d slice(s) while serving (%d named by workers first)",
            self.config.name,
            loaded,
            loader.slices,
            loader.named,
        )
        self._restored(loaded, loader.head_counts, time.monotonic() - loader.started)

    def _acquire_lease(self) -> int:
        """Take the workflow's lease, waiting while a predecessor's lease runs out (a manager
        that was killed leaves its lease to expire); refuse if it is still held after that.
        A store that does not answer yet is waited for up to ``redis_outage_grace``: in a
        cluster the manager and its Redis start together, and the manager must not crash-loop
        until Redis is up."""
        cfg = self.config
        started = time.monotonic()
        deadline = started + (cfg.lease_wait if cfg.lease_wait is not None else cfg.lease_ttl + 5)
        logged: set[type[StoreError]] = set()
        while True:
            try:
                return self.store.acquire(self.manager_id, cfg.lease_ttl)
            except LeaseHeld as e:
                if time.monotonic() > deadline or not self.running:
                    raise
                if LeaseHeld not in logged:
                    log.warning("%s; waiting for it to expire", e)
                    logged.add(LeaseHeld)
            except StoreUnreachable as e:
                if time.monotonic() - started >= cfg.redis_outage_grace or not self.running:
                    raise
                if StoreUnreachable not in logged:
                    log.warning("%s; waiting up to %.0fs for it to come up", e, cfg.redis_outage_grace)
                    logged.add(StoreUnreachable)
            time.sleep(0.2)

    def stop(self, *_: object) -> None:
        self.running = False

    def _wake(self) -> None:
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        self.turns.close()
        self.fetches.fetcher.close()
        self.fetches.close()
        self.uploads.close()
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
        self.txlog.write([txformat.manager_stopped(self.manager_id)])
        self.txlog.close()
        self.wire.close()

    def serve_forever(self) -> None:
        os.umask(0o077)  # whatever the manager writes from here on is its own user's
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
        self._wake()  # the loop may be waiting in a poll that resumes after the signal (PEP 475)

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        cfg = self.config
        poller = zmq.Poller()
        poller.register(self.wire.sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        poller.register(self.wire.monitor, zmq.POLLIN)
        next_tick = 0.0
        next_stats = 0.0
        heard_until = time.time()  # every message that arrived until then has been read
        last_pass = 0.0
        turn = self.turns
        while self.running:
            now = time.time()
            wait = max(0.0, min(next_tick, next_stats, self._acks_due or next_tick) - now)
            if self.core.behind or (
                self.loader is not None and self.loader.due()
            ):  # more to place, or to load
                wait = 0.0
            polled = poller.poll(int(wait * 1000) + 1 if wait > 0 else 0)
            turn.start()
            now = time.time()
            self.core.handle(events.Clock(now))
            ready = {s for s, _ in polled}
            drained = self.wire.sock not in ready or self.receiver.drain(now)
            if drained:
                heard_until = now
            if ready:
                if self._wake_rx in ready:
                    self._drain_wake()
                    self.fetches.pulled()
                if self.wire.monitor in ready:
                    self.wire.handshakes_failed()
                self._send_durable()
            turn.mark("read")
            if self.persister.fatal is not None:
                raise self.persister.fatal
            if self.loader is not None:
                self._load_slice()
                turn.mark("load")
            if now >= next_tick:
                self.core.handle(events.Tick(heard_until))
                self._tick(heard_until)
                next_tick = now + min(cfg.heartbeat_interval, 1.0)
                turn.mark("tick")
            if self.persister.wiped and not self.persister.reseed_requested:
                self._reseed()
            # read before dispatching more: while messages wait unread, a pass only every
            # BACKLOG_PASS_EVERY, so what workers and clients said is never left behind new work
            if drained or now - last_pass >= BACKLOG_PASS_EVERY:
                self.core.handle(events.SCHEDULE)
                last_pass = now
                turn.mark("schedule")
            self._flush()
            turn.mark("send")
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
                turn.mark("stats")
            turn.end()

    def _tick(self, heard_until: float) -> None:
        """Once a second or so: sessions gone silent (judged against ``heard_until``, when the
        socket was last read empty), heartbeats, the store, stale files."""
        self.sessions.expire(heard_until)
        # each peer hears from the manager well within its own timeout (it waits timeout +
        # interval before it reconnects), not necessarily every tick
        tick = min(self.config.heartbeat_interval, 1.0)
        every = max(1, min(5, int(self.config.heartbeat_timeout / (4 * tick))))
        self.sessions.heartbeat(self.manager_id, every)
        self._watch_store()
        self.fetches.expire()
        dropped = self.uploads.expire()
        if dropped:
            for name, why in dropped:
                self.core.handle(events.UploadFailed(name, why))
        self.sessions.throttle.flush()
        self.wire.throttle.flush()
        self.receiver.throttle.flush()

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
            self.txlog.write([txformat.manager_refusing(self.manager_id, "store-unavailable")])
        elif self._refusing and not refusing:
            log.warning("state store is back: accepting new work again")
            self.txlog.write([txformat.manager_accepting(self.manager_id)])
        self._refusing = refusing

    def _reseed(self) -> None:
        """The store forgot the workflow: write everything we hold again, in one batch."""
        if self.loader is not None:  # what was still to load went with the store's data
            log.error(
                "the state store lost workflow %s while %s: those are gone from it; connected "
                "clients send theirs again when they reconnect, tasks of absent clients are lost",
                self.config.name,
                self.loader.progress(),
            )
        self._flush()  # this cycle's changes first (the full batch subsumes them anyway)
        batch = recovery.full_batch(self.core)
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
        self.txlog.write([txformat.manager_reseed(self.manager_id, len(batch.records))])
        self.persister.submit(batch, [])

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _send_durable(self) -> None:
        for item in self.persister.done():
            if isinstance(item, SendAck):
                self._hold_ack(item)
            else:
                if isinstance(item[1], Welcome):
                    peer = self.peers.get(item[0])
                    if peer is not None:
                        self.peers.unwelcomed.discard(peer.id)
                self._send(*item)

    def _hold_ack(self, ack: SendAck) -> None:
        """Held a little: one ack for many updates, or on the next dispatch to that worker."""
        self._acks.setdefault(ack.worker, []).extend(ack.tasks)
        self._acks_held += len(ack.tasks)
        if self._acks_due is None:
            self._acks_due = time.time() + ACK_DELAY

    def _take_acks(self, wid: WorkerId) -> list[TaskRef]:
        """The acknowledgements held for ``wid``, to go with a message sent to it now."""
        refs = self._acks.pop(wid, None)
        if refs is None:
            return []
        self._acks_held -= len(refs)
        if not self._acks:
            self._acks_due = None
        return refs

    def _send_acks(self) -> None:
        """Tell workers which results are stored (they may forget them now)."""
        acks, self._acks = self._acks, {}
        self._acks_due, self._acks_held = None, 0
        for wid, refs in acks.items():
            self._send_to("worker", wid, UpdateAck(tasks=refs))

    def _flush(self) -> None:
        batch, out = self.core.take()
        after: list[SendAck | tuple[bytes, _Msg] | tuple[bytes, _Msg, list[bytes]]] = []
        for i in out:  # acks go once their results are stored: at once in memory, so they
            if not isinstance(i, SendAck):  # may ride on this turn's dispatches
                continue
            if self.store.durable:
                after.append(i)
            else:
                self._hold_ack(i)
        self.txlog.write(self.core.transactions)
        self.core.transactions.clear()
        for ins in out:
            match ins:
                case SendDispatch():
                    self.counters.dispatch(ins.tasks)
                    dispatch = Dispatch(tasks=ins.tasks, acks=self._take_acks(ins.worker))
                    self._send_to("worker", ins.worker, dispatch, ins.frames)
                case SendResults():
                    self._deliver(ins, after)
                case SendKill():
                    self._send_to("worker", ins.worker, Kill(tasks=ins.tasks))
                case SendForget():
                    self._send_to("worker", ins.worker, ForgetFiles(cache_names=ins.names))
                case SendDrain():
                    self._send_to("worker", ins.worker, Drain())
                case SendInstall():
                    lib = self.core.libraries.get(ins.library)
                    if lib is not None:
                        install = InstallLibrary(spec=lib.spec, frame=0, stage=ins.stage)
                        self._send_to("worker", ins.worker, install, [lib.payload])
                case SendRemove():
                    self._send_to("worker", ins.worker, RemoveLibrary(name=ins.library))
                case SendPeerLost():
                    self._send_to("worker", ins.worker, PeerLost(worker=ins.lost, address=ins.address))
                case ClientError():
                    error = ErrorMsg(code=ins.code, message=ins.message, task_ids=ins.task_ids)
                    self._send_to("client", ins.client, error)
                case SendWelcome():  # its id block must be durable first
                    self._after_durable(after, ins.client, self._welcome(ins))
                case SendIdBlock():
                    self._after_durable(
                        after, ins.client, IdBlock(first_task_id=ins.first_task_id, count=ins.count)
                    )
                case SendAck():
                    pass  # sent once the batch holding their results is durable (above)
                case _:
                    assert_never(ins)
        self.persister.submit(batch, after)
        self._send_durable()  # an in-memory store is durable at once

    def _deliver(self, ins: SendResults, after: list[Any]) -> None:
        """One Results message for a client, its results' frames joined; after its welcome if
        that is still on its way."""
        res: list[ClientResult] = []
        frames: list[bytes] = []
        for r, fr in ins.results:
            base = len(frames)
            frames += fr
            if base:
                r = _shift(r, base)
            res.append(r)
            if r.state == "failed" and len(self.recent_failures) < 1000:
                failure = Failure(
                    task_id=r.task_id, outcome=r.outcome.value, error=r.error, exit_code=r.exit_code
                )
                self.recent_failures.append(failure)
        self.counters.result_messages += 1
        ident = self.peers.route("client", ins.client)
        if ins.client in self.peers.unwelcomed and ident is not None:
            after.append((ident, Results(results=res), frames))
        else:
            self._send_to("client", ins.client, Results(results=res), frames)

    def _after_durable(self, after: list[Any], client: ClientId, msg: _Msg) -> None:
        ident = self.peers.route("client", client)
        if ident is not None:
            after.append((ident, msg))

    def _welcome(self, ins: SendWelcome | None = None) -> Welcome:
        """A welcome: a client's carries its id block (and, on attach, its tasks)."""
        cfg = self.config
        welcome = Welcome(
            workflow=cfg.name,
            manager_id=self.manager_id,
            heartbeat_interval=cfg.heartbeat_interval,
            heartbeat_timeout=cfg.heartbeat_timeout,
        )
        if ins is not None:
            welcome.first_task_id, welcome.id_block, welcome.tasks = (
                ins.first_task_id,
                ins.id_block,
                ins.tasks,
            )
        return welcome

    # ------------------------------------------------------------------ sending

    def _send(self, ident: bytes, msg: _Msg, frames: list[bytes] | None = None) -> bool:
        return self.wire.send(ident, msg, frames)

    def _send_to(self, role: Role, pid: str, msg: _Msg, frames: list[bytes] | None = None) -> None:
        ident = self.peers.route(role, pid)
        if (ident is None or not self._send(ident, msg, frames)) and role == "client":
            self.core.handle(events.ClientLeft(ClientId(pid)))

    def _why_refusing(self) -> str | None:
        """Why a client cannot be welcomed now (the store is away), or None."""
        if not self._refusing:
            return None
        return (
            f"the state store has been unreachable for {self.persister.outage:.0f}s: "
            "a client can be welcomed only once it is back"
        )

    def _fetch_logged(
        self, name: CacheName, source: str, peer: str | None, cid: str, size: int, seconds: float
    ) -> None:
        self.txlog.write([txformat.transfer_fetched(name, source, peer, cid, size, seconds)])

    # ------------------------------------------------------------------ status

    def status(self, with_workers: bool = True) -> ManagerStatus:
        """The status now (``with_workers``: with one entry per worker, O(W))."""
        st = status.snapshot(
            self.core,
            self.counters,
            time.time(),
            workflow=self.config.name,
            manager_id=self.manager_id,
            address=self.address,
            durable=self.store.durable,
            started=self.started,
            recent_failures=self.recent_failures,
            store_outage=self.persister.outage,
            refusing_work=self._refusing,
            with_workers=with_workers,
        )
        st.sessions = len(self.peers)
        if self.loader is not None:
            st.loading = self.loader.left()
        return st


class Turns:
    """How long the loop's turns take: the longest since the start, and a warning (throttled)
    for a turn longer than :data:`SLOW_TURN`, with what it spent its time on. A turn is what
    delays every peer's answer, so this is the manager's own view of its answer latency."""

    __slots__ = ("gc_s", "gc_t0", "longest", "parts", "slow", "t0", "t_last", "warned_at")

    def __init__(self) -> None:
        self.gc_s = self.gc_t0 = 0.0  # time in garbage collection this turn
        gc.callbacks.append(self._gc)
        self.longest = 0.0
        self.slow = 0  # turns longer than SLOW_TURN
        self.parts: list[tuple[str, float]] = []
        self.t0 = self.t_last = 0.0
        self.warned_at = 0.0

    def close(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_t0 = time.monotonic()
        else:
            self.gc_s += time.monotonic() - self.gc_t0

    def start(self) -> None:
        self.t0 = self.t_last = time.monotonic()
        self.parts.clear()
        self.gc_s = 0.0

    def mark(self, what: str) -> None:
        t = time.monotonic()
        self.parts.append((what, t - self.t_last))
        self.t_last = t

    def end(self) -> None:
        took = time.monotonic() - self.t0
        self.longest = max(self.longest, took)
        if took > SLOW_TURN:
            self.slow += 1
            if self.t0 - self.warned_at > 10:
                self.warned_at = self.t0
                parts = [*self.parts, ("of which gc", self.gc_s)]
                spent = ", ".join(f"{what} {1e3 * s:.0f} ms" for what, s in parts)
                log.warning("a loop turn took %.2fs (%s); %d slow turn(s) so far", took, spent, self.slow)


SLOW_TURN = 1.0  # seconds: a turn this long is logged


def _shift(r: ClientResult, base: int) -> ClientResult:
    """The same result with its frame indices moved by ``base`` (results share a message)."""
    if r.outputs:
        outputs = [o if o.frame is None else replace(o, frame=o.frame + base) for o in r.outputs]
        return replace(
            r, output_frame=None if r.output_frame is None else r.output_frame + base, outputs=outputs
        )
    return r if r.output_frame is None else replace(r, output_frame=r.output_frame + base)
