"""The manager's pure core: workflow state, events in, instructions out.

No sockets and no Redis here. The service feeds events (a client submitted, a worker
reported, time passed) into :class:`Core`; each event updates the state, records what must
be persisted in the current :class:`~kubevine.manager.store.WriteBatch`, and appends
instructions (dispatch these tasks to that worker, deliver these results to that client)
to ``core.out``. The service persists the batch first, then carries out the instructions,
so nothing is announced that is not yet durable.

Scheduling packs tasks onto workers by cores, memory, disk and gpus, highest priority
first. To keep a fast worker busy between round trips it may also hold a few queued
tasks beyond what it can run at once (``prefetch``); the worker starts them only when
its own resources allow, so a queued task never shares resources it does not have.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager import dataplane
from kubevine.manager.catalog import Catalog
from kubevine.manager.libraries import BROKEN_AFTER, Instance, LibraryEntry
from kubevine.manager.states import FINAL, TaskState, WorkerState, check_move
from kubevine.manager.store import Snapshot, TaskRecord, WriteBatch
from kubevine.protocol import (
    Assignment,
    AttemptResult,
    ClientResult,
    FileKind,
    LibrarySpec,
    Outcome,
    StageIn,
    TaskKind,
    TaskRef,
    TaskSpec,
    TransferRecord,
    WorkerInfo,
    replace,
    walk_bindings,
)
from kubevine.resources import Resources, Tally
from kubevine.txformat import q
from kubevine.txformat import resources as res_kv

# the same few causes, libraries and tags repeat on every task's lines: quote each once
_q = functools.lru_cache(maxsize=4096)(q)

log = logging.getLogger(__name__)

S = TaskState
ID_BLOCK = 1_000_000  # task ids granted to a client at a time
MAX_LOST = 5  # worker losses a task survives before it is failed


@dataclass(slots=True)
class TaskEntry:
    spec: TaskSpec
    payload: bytes | None
    client: ClientId
    state: TaskState
    seq: int
    attempt: int = 0
    failures: int = 0
    lost: int = 0
    worker: WorkerId | None = None
    result: ClientResult | None = None
    frames: list[bytes] = field(default_factory=list)
    unschedulable: bool = False
    rerun: bool = False  # running again to regenerate a lost temp file
    story: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self) -> TaskRecord:
        return TaskRecord(
            self.client, self.state, self.attempt, self.failures, self.lost, self.worker, self.seq
        )


@dataclass(slots=True)
class WorkerEntry:
    info: WorkerInfo
    state: WorkerState
    last_seen: float
    committed: Tally = field(default_factory=Tally)
    tasks: dict[TaskId, int] = field(default_factory=dict)  # task -> attempt
    queued: int = 0  # dispatched, not yet reported started
    idle_since: float | None = None
    cached: set[CacheName] = field(default_factory=set)
    deadline: float | None = None  # RECOVERING: lost if not back by then
    libs: dict[str, Instance] = field(default_factory=dict)  # library instances here
    calls: int = 0  # function calls among ``tasks`` (they hold library slots, not cores)

    @property
    def id(self) -> WorkerId:
        return self.info.worker_id


# ------------------------------------------------------------------ instructions


@dataclass(slots=True)
class SendDispatch:
    worker: WorkerId
    tasks: list[Assignment]
    frames: list[bytes]


@dataclass(slots=True)
class SendKill:
    worker: WorkerId
    tasks: list[TaskRef]


@dataclass(slots=True)
class SendResults:
    client: ClientId
    results: list[tuple[ClientResult, list[bytes]]]


@dataclass(slots=True)
class SendAck:
    worker: WorkerId
    tasks: list[TaskRef]


@dataclass(slots=True)
class SendDrain:
    worker: WorkerId


@dataclass(slots=True)
class ClientError:
    client: ClientId
    code: str
    message: str
    task_ids: list[TaskId]


@dataclass(slots=True)
class SendInstall:
    worker: WorkerId
    library: str


@dataclass(slots=True)
class SendRemove:
    worker: WorkerId
    library: str


@dataclass(slots=True)
class SendPeerLost:
    """Tell ``worker`` that ``lost`` is gone: stop waiting for files from it."""

    worker: WorkerId
    lost: WorkerId
    address: str | None


@dataclass(slots=True)
class SendForget:
    """Tell ``worker`` to delete these files from its cache (undeclared by the client)."""

    worker: WorkerId
    names: list[CacheName]


Instruction = (
    SendDispatch
    | SendKill
    | SendForget
    | SendResults
    | SendAck
    | SendDrain
    | ClientError
    | SendInstall
    | SendRemove
    | SendPeerLost
)


@dataclass(frozen=True)
class Settings:
    heartbeat_timeout: float = 30.0
    recover_grace: float = 30.0  # how long a restarted manager waits for known workers
    # For short tasks a worker may hold (1 + prefetch) x its cores in tasks, the extra ones
    # queued there so it never waits a round trip between tasks. Long tasks are never
    # queued ahead: that would leave another worker idle while they wait.
    prefetch: int = 3
    prefetch_below: float = 0.05  # seconds: recent task wall time under which we prefetch
    transfers_per_source: int = 4  # files one worker (or the manager, or a URL) sends at once


class Core:
    """All workflow state, and every decision about it."""

    def __init__(self, settings: Settings | None = None, *, now: float | None = None) -> None:
        self.settings = settings or Settings()
        self.tasks: dict[TaskId, TaskEntry] = {}
        self.workers: dict[WorkerId, WorkerEntry] = {}
        self.ready: list[tuple[float, int, TaskId]] = []  # (-priority, seq, id)
        self.unschedulable: set[TaskId] = set()
        self.known_files: set[CacheName] = set()
        # which worker and node holds which file
        self.catalog = Catalog(source_limit=self.settings.transfers_per_source)
        self.producers: dict[CacheName, TaskId] = {}  # temp file -> the task that makes it
        self.undeclared: set[CacheName] = set()  # until used again: a copy reported late is deleted
        self.undeclare_later: dict[CacheName, ClientId] = {}  # in use when undeclared: retried on tick
        self.waiting_for: dict[CacheName, set[TaskId]] = {}  # temp file -> tasks waiting for it
        self.moved: dict[str, int] = {}  # bytes moved to workers, by source kind
        self.connected_clients: set[ClientId] = set()
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self.totals = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0, "retried": 0}
        self._stored_totals = dict(self.totals)
        self.next_task_id = 1
        self.batch = WriteBatch()
        self.out: list[Instruction] = []
        self.transactions: list[str] = []
        self._seq = itertools.count()
        self._pending_results: dict[ClientId, list[tuple[ClientResult, list[bytes]]]] = {}
        self._dispatch: dict[WorkerId, SendDispatch] = {}
        self._acks: dict[WorkerId, list[TaskRef]] = {}
        self._dirty: dict[TaskId, TaskEntry] = {}  # tasks whose record changed this cycle
        self.avg_wall: float | None = None  # moving average of attempts' wall time
        self.libraries: dict[str, LibraryEntry] = {}
        self.now = now if now is not None else time.time()

    # ------------------------------------------------------------- bookkeeping

    def take(self) -> tuple[WriteBatch, list[Instruction]]:
        """Hand the cycle's writes and instructions to the service, and start afresh."""
        for tid, t in self._dirty.items():
            if tid in self.tasks:
                self.batch.records[tid] = t.record()
        self._dirty.clear()
        if self.totals != self._stored_totals:
            self._stored_totals = dict(self.totals)
            self.batch.meta["totals"] = json.dumps(self.totals)
        if self.catalog.journal:
            self.batch.replicas.update(self.catalog.journal)
            self.catalog.journal.clear()
        for sd in self._dispatch.values():
            self.out.append(sd)
        self._dispatch.clear()
        for wid, refs in self._acks.items():
            self.out.append(SendAck(wid, refs))
        self._acks.clear()
        for cid, results in self._pending_results.items():
            if cid in self.connected_clients:
                self.out.append(SendResults(cid, results))
        self._pending_results = {
            c: r for c, r in self._pending_results.items() if c not in self.connected_clients
        }
        batch, out = self.batch, self.out
        self.batch, self.out = WriteBatch(), []
        return batch, out

    def _move(self, t: TaskEntry, to: TaskState, cause: str, detail: str = "") -> None:
        reason = check_move(t.state, to)
        self.counts[t.state] -= 1
        self.counts[to] += 1
        t.state = to
        t.story.append((self.now, to.value, cause))
        self._dirty[t.spec.id] = t
        self.transactions.append(
            f"TASK {t.spec.id} {to} attempt={t.attempt} worker={t.worker or '-'} cause={_q(cause or reason)}"
            + detail
        )

    def story(self, task_id: TaskId) -> list[tuple[float, str, str]]:
        """Every state a task went through, with when and why."""
        t = self.tasks.get(task_id)
        return list(t.story) if t else []

    def _make_ready(self, t: TaskEntry, cause: str) -> None:
        t.worker = None
        lib = self.libraries.get(t.spec.library or "") if t.spec.kind == TaskKind.CALL else None
        if t.spec.kind == TaskKind.CALL and lib is None:  # removed while the call was out
            self._finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=f"library {t.spec.library!r} was removed")
            return
        self._move(t, S.READY, cause)
        item = (-t.spec.priority, t.seq, t.spec.id)
        if lib is not None:
            heapq.heappush(lib.ready, item)
        else:
            heapq.heappush(self.ready, item)

    # ------------------------------------------------------------- clients

    def client_connected(self, client: ClientId) -> tuple[TaskId, int]:
        """A client said hello: grant it a block of task ids; re-send what it has not acked."""
        self.connected_clients.add(client)
        first = TaskId(self.next_task_id)
        self.next_task_id += ID_BLOCK
        self.batch.meta["next_task_id"] = str(self.next_task_id)
        unacked = [
            (t.result, t.frames) for t in self.tasks.values() if t.client == client and t.result is not None
        ]
        if unacked:
            self._pending_results.setdefault(client, []).extend(unacked)
        return first, ID_BLOCK

    def grant_ids(self) -> tuple[TaskId, int]:
        first = TaskId(self.next_task_id)
        self.next_task_id += ID_BLOCK
        self.batch.meta["next_task_id"] = str(self.next_task_id)
        return first, ID_BLOCK

    def client_disconnected(self, client: ClientId) -> None:
        self.connected_clients.discard(client)

    def files_received(self, names: Iterable[CacheName]) -> None:
        names = list(names)
        self.known_files.update(names)
        self.undeclared.difference_update(names)
        for n in names:
            self.undeclare_later.pop(n, None)

    def keep_file(self, name: CacheName, data: bytes) -> None:
        """A client sent this file: store it with the workflow, so a new manager can serve it."""
        self.known_files.add(name)
        self.batch.files[name] = data

    def submit(self, client: ClientId, specs: list[TaskSpec], payloads: list[bytes | None]) -> None:
        dup: list[TaskId] = []
        for spec, payload in zip(specs, payloads, strict=True):
            if spec.id in self.tasks:
                if self.tasks[spec.id].client != client:
                    dup.append(spec.id)
                continue  # the same client again (after a reconnect): already have it
            t = TaskEntry(spec, payload, client, S.WAITING, next(self._seq))
            self.tasks[spec.id] = t
            self.transactions.append(
                f"TASK {spec.id} waiting type={spec.kind} {res_kv(spec.resources)}"
                f" category={_q(spec.category)} library={_q(spec.library)} tag={_q(spec.tag)}"
            )
            self.counts[S.WAITING] += 1
            self.totals["submitted"] += 1
            self.batch.specs[spec.id] = (spec, payload)
            why_not = self._call_problem(spec)
            if why_not is not None:
                self._finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=why_not)
                continue
            missing = [
                b.remote_name
                for b in walk_bindings(spec.inputs)
                if b.kind in (FileKind.LOCAL, FileKind.BUFFER)
                and (b.cache_name is None or b.cache_name not in self.known_files)
            ]
            if missing:
                self._finish(
                    t,
                    S.FAILED,
                    Outcome.INPUT_MISSING,
                    error=f"input file(s) {', '.join(missing)} never reached the manager",
                )
                continue
            why = dataplane.on_submit(self, self.catalog, t)
            if why == "wait":
                continue  # stays waiting until its temp inputs exist
            if why is not None:
                self._finish(t, S.FAILED, Outcome.INPUT_MISSING, error=why)
                continue
            self._make_ready(t, "submitted")
        if dup:
            self.out.append(
                ClientError(client, "duplicate_task_id", f"task ids already in use: {dup[:10]}", dup)
            )

    def results_acked(self, client: ClientId, task_ids: Iterable[TaskId]) -> None:
        for tid in task_ids:
            t = self.tasks.get(tid)
            if t is None or t.client != client or t.state not in FINAL:
                continue
            if self._makes_live_temps(t):
                # kept: it may have to run again to regenerate a lost temp file; its result
                # is the client's now (never sent again)
                if t.result is not None:
                    t.result, t.frames = None, []
                    self.batch.collected.add(tid)
                    self.batch.results.pop(tid, None)
                continue
            self._forget_task(t)

    def _makes_live_temps(self, t: TaskEntry) -> bool:
        """It wrote a temp file that is still declared (it may have to write it again)."""
        return any(
            b.kind == FileKind.TEMP
            and b.cache_name is not None
            and self.producers.get(b.cache_name) == t.spec.id
            for b in t.spec.outputs
        )

    def _forget_task(self, t: TaskEntry) -> None:
        tid = t.spec.id
        del self.tasks[tid]
        self.counts[t.state] -= 1
        self.batch.deleted.add(tid)
        self._dirty.pop(tid, None)
        self.batch.records.pop(tid, None)
        self.batch.results.pop(tid, None)
        self.batch.specs.pop(tid, None)

    def undeclare(self, client: ClientId, names: Iterable[CacheName]) -> None:
        """The client no longer needs these files: workers drop their copies, and a temp's
        producer is forgotten once its result is delivered. A file that a task still to finish
        reads or writes goes once no such task is left (checked on every tick)."""
        wanted = set(names)
        busy: dict[CacheName, TaskId] = {}
        for t in self.tasks.values():
            if t.state in FINAL:
                continue
            for b in (*walk_bindings(t.spec.inputs), *t.spec.outputs):
                if b.cache_name in wanted:
                    busy.setdefault(b.cache_name, t.spec.id)
        for name in busy:
            self.undeclare_later[name] = client
        by_worker: dict[WorkerId, list[CacheName]] = {}
        for name in sorted(wanted - busy.keys()):
            self.undeclared.add(name)
            for wid in self.catalog.forget(name):
                by_worker.setdefault(wid, []).append(name)
            self.waiting_for.pop(name, None)
            self.known_files.discard(name)
            pid = self.producers.pop(name, None)
            p = self.tasks.get(pid) if pid is not None else None
            if p is None or p.state not in FINAL:
                continue
            if p.result is None and not self._makes_live_temps(p):
                self._forget_task(p)  # its result was delivered: nothing left of it to keep
            else:  # kept for its result or its other temps: a restart must not make it a producer again
                outputs = [b for b in p.spec.outputs if b.cache_name != name]
                p.spec = p.spec.model_copy(update={"outputs": outputs})
                self.batch.specs[p.spec.id] = (p.spec, p.payload)
        for wid, forgotten in by_worker.items():
            self.out.append(SendForget(wid, forgotten))
            self.transactions.extend(f"CACHE {wid} forget file={n}" for n in forgotten)

    def forget_on(self, wid: WorkerId, names: list[CacheName]) -> None:
        """Tell a worker to delete files (undeclared ones it reported after the undeclare)."""
        self.out.append(SendForget(wid, names))
        self.transactions.extend(f"CACHE {wid} forget file={n}" for n in names)

    def cancel(self, client: ClientId, task_ids: Iterable[TaskId], tag: str | None) -> list[TaskId]:
        chosen = [self.tasks[i] for i in task_ids if i in self.tasks]
        if tag is not None:
            chosen += [t for t in self.tasks.values() if t.spec.tag == tag]
        cancelled: list[TaskId] = []
        for t in chosen:
            if t.state in FINAL or t.client != client:
                continue
            if t.state in (S.DISPATCHED, S.RUNNING) and t.worker is not None:
                self._release(t, kill=True)
            self.unschedulable.discard(t.spec.id)
            self._finish(t, S.CANCELLED, Outcome.CANCELLED, error="cancelled by the client")
            cancelled.append(t.spec.id)
        return cancelled

    # ------------------------------------------------------------- workers

    def worker_connected(self, info: WorkerInfo) -> None:
        """A worker said hello: new, reconnecting, or back after a manager restart."""
        wid = info.worker_id
        old = self.workers.get(wid)
        w = WorkerEntry(info, WorkerState.CONNECTED, self.now, idle_since=self.now)
        self.workers[wid] = w
        if old is not None:  # replicas it no longer reports (evicted while we were apart)
            now_held = set(info.cached)
            group = old.info.cache_group or old.info.node
            for name in [n for n, h in self.catalog.holders.items() if wid in h and n not in now_held]:
                self.catalog.remove(name, wid, group)
        dataplane.on_cached(self, self.catalog, w, list(info.cached))
        self.batch.workers[wid] = info.model_copy(update={"running": [], "cached": []})
        self.transactions.append(
            f"WORKER {wid} connected node={q(info.node)} host={q(info.host)} {res_kv(info.resources)}"
            f" cached={len(info.cached)} running={len(info.running)}"
        )
        held = {r.task_id: r.attempt for r in info.running}
        for lname in info.libraries:  # instances it still runs (after a manager restart)
            lentry = self.libraries.get(lname)
            if lentry is not None and lname not in w.libs:
                w.libs[lname] = Instance("ready")
                w.committed.add(lentry.spec.resources)
        # tasks we believe are on it: re-attach those it still holds, requeue the others
        if old is not None:
            for tid, attempt in old.tasks.items():
                t = self.tasks.get(tid)
                if t is None or t.worker != wid or t.attempt != attempt:
                    continue
                if held.get(tid) == attempt:
                    self._attach(w, t)
                else:
                    self._requeue_lost(t, "worker came back without it")
        for tid, a in held.items():
            t = self.tasks.get(tid)
            if tid in w.tasks or t is None or t.state != S.READY or a <= t.attempt:
                continue
            # a dispatch the store never recorded (the manager died first): the worker runs
            # or has run it; adopt that attempt instead of running the task again
            if t.spec.kind == TaskKind.CALL and (t.spec.library or "") not in w.libs:
                continue
            t.attempt, t.worker = a, wid
            self._move(t, S.DISPATCHED, f"adopted from {wid}")
            self._attach(w, t)
        stale = [TaskRef(task_id=tid, attempt=a) for tid, a in held.items() if tid not in w.tasks]
        if stale:
            self.out.append(SendKill(wid, stale))
        if w.tasks:
            w.idle_since = None
        for tid in list(self.unschedulable):
            t = self.tasks[tid]
            if t.spec.resources.fits_in(info.resources):
                self.unschedulable.discard(tid)
                t.unschedulable = False
                heapq.heappush(self.ready, (-t.spec.priority, t.seq, tid))

    def _attach(self, w: WorkerEntry, t: TaskEntry) -> None:
        w.tasks[t.spec.id] = t.attempt
        w.committed.add(t.spec.resources)
        if t.state == S.DISPATCHED:
            w.queued += 1
        if t.spec.kind == TaskKind.CALL:
            w.calls += 1
            inst = w.libs.get(t.spec.library or "")
            if inst is not None:
                inst.active += 1

    def worker_seen(self, wid: WorkerId) -> None:
        w = self.workers.get(wid)
        if w is not None:
            w.last_seen = self.now

    def worker_lost(self, wid: WorkerId, why: str) -> None:
        w = self.workers.pop(wid, None)
        if w is None:
            return
        self.batch.workers[wid] = None
        self.transactions.append(f"WORKER {wid} disconnected cause={q(why)} tasks={len(w.tasks)}")
        log.warning("worker %s lost (%s); requeueing %d task(s)", wid, why, len(w.tasks))
        for tid in list(w.tasks):
            t = self.tasks.get(tid)
            if t is not None and t.worker == wid and t.state in (S.DISPATCHED, S.RUNNING):
                self._requeue_lost(t, f"worker {wid} {why}")
        dataplane.on_worker_lost(self, self.catalog, w)
        if w.info.transfer_address:  # fetches from it would wait for an answer that never comes
            for other in self.workers.values():
                if other.state in (WorkerState.CONNECTED, WorkerState.DRAINING):
                    self.out.append(SendPeerLost(other.id, wid, w.info.transfer_address))

    def _requeue_lost(self, t: TaskEntry, why: str) -> None:
        t.lost += 1
        w = self.workers.get(t.worker) if t.worker else None
        if w is not None:
            self._release(t, kill=False)
        if t.lost > MAX_LOST:
            self._finish(t, S.FAILED, Outcome.WORKER_LOST, error=f"lost {t.lost} times; last: {why}")
        else:
            self._make_ready(t, why)

    def drain(self, worker_ids: Iterable[WorkerId]) -> list[WorkerId]:
        """Stop giving these workers tasks; each leaves once its running tasks are done."""
        drained = []
        for wid in worker_ids:
            w = self.workers.get(wid)
            if w is None or w.state == WorkerState.DRAINING:
                continue
            w.state = WorkerState.DRAINING
            drained.append(wid)
            self.transactions.append(f"WORKER {wid} draining")
            # take back what it queued but has not started: someone else can run it now
            for tid in [t for t in w.tasks if self.tasks[t].state == S.DISPATCHED]:
                t = self.tasks[tid]
                self._release(t, kill=True)
                self._make_ready(t, f"worker {wid} draining")
            self._maybe_release_drained(w)
        return drained

    def _maybe_release_drained(self, w: WorkerEntry) -> None:
        if w.state == WorkerState.DRAINING and not w.tasks:
            self.out.append(SendDrain(w.id))

    def worker_update(
        self,
        wid: WorkerId,
        started: list[TaskRef],
        results: list[AttemptResult],
        frames: list[bytes],
        cached: list[CacheName] = (),  # type: ignore[assignment]
        evicted: list[CacheName] = (),  # type: ignore[assignment]
        transfers: list[TransferRecord] = (),  # type: ignore[assignment]
    ) -> None:
        w = self.workers.get(wid)
        if w is None:
            return
        w.last_seen = self.now
        dataplane.on_cached(self, self.catalog, w, list(cached))
        dataplane.on_evicted(self.catalog, w, list(evicted))
        dataplane.on_transfers(self, self.catalog, w, list(transfers))
        for name in cached:
            self.transactions.append(f"CACHE {wid} insert file={name}")
        for name in evicted:
            self.transactions.append(f"CACHE {wid} evict file={name}")
        for ref in started:
            t = self.tasks.get(ref.task_id)
            if t and t.worker == wid and t.attempt == ref.attempt and t.state == S.DISPATCHED:
                w.queued -= 1
                self._move(t, S.RUNNING, "started")
        acks = self._acks.setdefault(wid, [])
        for r in results:
            acks.append(TaskRef(task_id=r.task_id, attempt=r.attempt))
            t = self.tasks.get(r.task_id)
            if (
                t is None
                or t.worker != wid
                or t.attempt != r.attempt
                or t.state not in (S.DISPATCHED, S.RUNNING)
            ):
                self.transactions.append(f"TASK {r.task_id} stale-result attempt={r.attempt} worker={wid}")
                continue
            self._release(t, kill=False)
            self._attempt_ended(t, r, frames, wid)
        if not w.tasks and w.idle_since is None:
            w.idle_since = self.now
        self._maybe_release_drained(w)

    def _release(self, t: TaskEntry, *, kill: bool) -> None:
        """Free the resources a task holds on its worker."""
        wid = t.worker
        w = self.workers.get(wid) if wid else None
        if w is None or wid is None:
            return
        if w.tasks.pop(t.spec.id, None) is not None:
            w.committed.remove(t.spec.resources)
            if t.state == S.DISPATCHED:
                w.queued -= 1
            if t.spec.kind == TaskKind.CALL:
                w.calls -= 1
                inst = w.libs.get(t.spec.library or "")
                if inst is not None:
                    inst.active -= 1
            if kill:
                self.out.append(SendKill(wid, [TaskRef(task_id=t.spec.id, attempt=t.attempt)]))
        if not w.tasks:
            w.idle_since = self.now

    def _attempt_ended(self, t: TaskEntry, r: AttemptResult, frames: list[bytes], wid: WorkerId) -> None:
        w = r.wall_time
        if t.spec.kind == TaskKind.CALL:
            lib = self.libraries.get(t.spec.library or "")
            if lib is not None:
                lib.observe(w)
        else:
            self.avg_wall = w if self.avg_wall is None else 0.9 * self.avg_wall + 0.1 * w
        out_frames: list[bytes] = []

        def take(i: int | None) -> int | None:
            if i is None or not 0 <= i < len(frames):
                return None
            out_frames.append(frames[i])
            return len(out_frames) - 1

        ok = r.outcome == Outcome.SUCCESS
        if not ok:
            t.failures += 1
        retry = not ok and t.failures <= t.spec.retries
        ran = f" started={r.started:.6f} wall={r.wall_time:.6f} exit={_q(r.exit_code)}"
        result = ClientResult(
            task_id=t.spec.id,
            state="done" if ok else "failed",
            attempts=t.attempt,
            outcome=r.outcome,
            exit_code=r.exit_code,
            output_frame=take(r.output_frame),
            error=r.error,
            wall_time=r.wall_time,
            worker=wid,
            outputs=[o if o.frame is None else replace(o, frame=take(o.frame)) for o in r.outputs],
        )
        if ok:
            w_entry = self.workers.get(wid)
            if w_entry is not None:
                dataplane.on_outputs(self, self.catalog, w_entry, r.outputs)
            self._finish(t, S.DONE, r.outcome, result=result, frames=out_frames, detail=ran)
            return
        if r.outcome == Outcome.INPUT_MISSING:
            we = self.workers.get(wid)
            node = (we.info.cache_group or we.info.node) if we is not None else None
            for b in walk_bindings(t.spec.inputs):  # what an untar or minitask is made from too
                if b.cache_name is not None:
                    self.catalog.done(wid, b.cache_name, node)
        if retry:
            self.totals["retried"] += 1
            t.worker = None
            self._move(t, S.RETRYING, f"attempt {t.attempt} {r.outcome.value}", ran)
            self._make_ready(t, "retry")
            return
        self._finish(t, S.FAILED, r.outcome, result=result, frames=out_frames, detail=ran)

    def _finish(
        self,
        t: TaskEntry,
        to: TaskState,
        outcome: Outcome,
        *,
        result: ClientResult | None = None,
        frames: list[bytes] | None = None,
        error: str | None = None,
        detail: str = "",
    ) -> None:
        state = {S.DONE: "done", S.FAILED: "failed", S.CANCELLED: "cancelled"}[to]
        if result is None:
            result = ClientResult(
                task_id=t.spec.id, state=state, attempts=t.attempt, outcome=outcome, error=error
            )
        elif result.state != state:
            result = result.model_copy(update={"state": state})
        t.result, t.frames = result, frames or []
        makes_temps = any(b.kind == FileKind.TEMP for b in t.spec.outputs)
        if not makes_temps:
            t.payload = None  # a temp's producer keeps it: it may have to run again
        self._move(t, to, outcome.value, detail)
        if to != S.DONE:
            dataplane.producer_ended(self, t)
        if t.rerun:
            t.rerun = False
            return  # a regenerated temp: the client had this result already
        self.totals[state] += 1
        self.batch.results[t.spec.id] = (result, t.frames)
        self._pending_results.setdefault(t.client, []).append((result, t.frames))

    # ------------------------------------------------------------- libraries

    def _call_problem(self, spec: TaskSpec) -> str | None:
        """Why a function call cannot run at all, or None."""
        if spec.kind != TaskKind.CALL:
            return None
        lib = self.libraries.get(spec.library or "")
        if lib is None:
            return f"no library named {spec.library!r} is installed (m.install_library first)"
        if lib.broken is not None:
            return f"library {spec.library!r} cannot start: {lib.broken}"
        if spec.function not in lib.spec.functions:
            return (
                f"library {spec.library!r} has no function {spec.function!r} "
                f"(it has: {', '.join(lib.spec.functions)})"
            )
        return None

    def install_library(self, client: ClientId, spec: LibrarySpec, payload: bytes) -> None:
        """Register a library; instances start on workers when calls for it wait."""
        old = self.libraries.get(spec.name)
        if old is not None and old.broken is None:
            if old.spec == spec and old.payload == payload:
                return  # the same library again: nothing to do
            why = f"library {spec.name!r} is installed; remove it first"
            self.out.append(ClientError(client, "library_exists", why, []))
            return
        entry = LibraryEntry(spec, payload, client)
        if old is not None:
            entry.ready = old.ready
        self.libraries[spec.name] = entry
        self.batch.libraries[spec.name] = (spec, payload)
        self.transactions.append(f"LIBRARY {spec.name} registered mode={spec.exec_mode} slots={spec.slots}")

    def remove_library(self, client: ClientId, name: str) -> None:
        lib = self.libraries.pop(name, None)
        if lib is None:
            return
        self.batch.libraries[name] = None
        for w in self.workers.values():
            if w.libs.pop(name, None) is not None:
                w.committed.remove(lib.spec.resources)
                self.out.append(SendRemove(w.id, name))
        for _, _, tid in lib.ready:
            t = self.tasks.get(tid)
            if t is not None and t.state == S.READY:
                self._finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=f"library {name!r} was removed")
        self.transactions.append(f"LIBRARY {name} removed")

    def library_status(self, wid: WorkerId, name: str, state: str, error: str | None) -> None:
        w = self.workers.get(wid)
        lib = self.libraries.get(name)
        if w is None:
            return
        inst = w.libs.get(name)
        self.transactions.append(f"LIBRARY {name} {state} worker={wid}")
        if state == "ready":
            if inst is not None:
                inst.state = "ready"
            return
        if inst is not None:  # failed or gone: it holds nothing here any more
            del w.libs[name]
            if lib is not None:
                w.committed.remove(lib.spec.resources)
        if state == "failed" and lib is not None:
            lib.failures += 1
            lib.failed_on.add(wid)
            log.warning("library %s failed on worker %s: %s", name, wid, (error or "")[-500:])
            if lib.failures >= BROKEN_AFTER:
                lib.broken = (error or "unknown error").strip().splitlines()[-1]
                for _, _, tid in lib.ready:
                    t = self.tasks.get(tid)
                    if t is not None and t.state == S.READY:
                        self._finish(
                            t,
                            S.FAILED,
                            Outcome.LIBRARY_ERROR,
                            error=f"library {name!r} failed to start: {error or 'unknown error'}",
                        )
                lib.ready.clear()

    def _schedule_calls(self, lib: LibraryEntry, workers: list[WorkerEntry]) -> None:
        name = lib.spec.name
        cap = lib.capacity()
        ready = lib.ready
        usable = [w for w in workers if (i := w.libs.get(name)) is not None and i.state == "ready"]
        later: list[tuple[float, int, TaskId]] = []  # calls whose inputs cannot be staged yet
        peers: dict[WorkerId, tuple[str | None, str]] | None = None
        while ready:
            best: WorkerEntry | None = None
            best_active = cap
            for w in usable:
                active = w.libs[name].active
                if active < best_active:
                    best, best_active = w, active
            if best is None:
                break
            item = heapq.heappop(ready)
            t = self.tasks.get(item[2])
            if t is None or t.state != S.READY:
                continue
            stages: list[StageIn] | None = []
            if t.spec.inputs:
                peers = self._peers() if peers is None else peers
                stages = dataplane.stage_for(self, self.catalog, t, best, peers)
            if stages is None:  # an input's sources are all busy: the call waits for a free one
                later.append(item)
                if len(later) >= 1000:  # enough planning for one cycle
                    break
                continue
            self._dispatch_call(t, best, best.libs[name], stages)
        for item in later:
            heapq.heappush(ready, item)
        if (
            ready
            and lib.broken is None
            and not any(i.state == "installing" for w in workers if (i := w.libs.get(name)) is not None)
        ):
            # calls wait and no instance is on its way: start one where it fits now, or else
            # where an idle instance of a library nobody is waiting for can make room
            target = next(
                (
                    w
                    for w in sorted(
                        workers,
                        key=lambda w: (w.id in lib.failed_on, w.committed.cores - w.info.resources.cores),
                    )
                    if name not in w.libs and w.committed.room_for(lib.spec.resources, w.info.resources)
                ),
                None,
            ) or self._evict_idle_library_for(lib, workers)
            if target is not None:
                target.libs[name] = Instance("installing")
                target.committed.add(lib.spec.resources)
                self.out.append(SendInstall(target.id, name))
                self.transactions.append(f"LIBRARY {name} installing worker={target.id}")

    def _idle_instances(self, w: WorkerEntry) -> list[tuple[str, LibraryEntry]]:
        """Library instances on ``w`` with no call running or waiting."""
        return [
            (name, o)
            for name, inst in w.libs.items()
            if inst.state == "ready" and not inst.active and (o := self.libraries.get(name)) and not o.ready
        ]

    def _evict_idle_libraries(self, need: Resources, workers: list[WorkerEntry]) -> WorkerEntry | None:
        """Remove idle library instances (no calls running or waiting) from one worker until
        ``need`` fits there; that worker, or None (and nothing removed)."""
        for w in workers:
            idle = self._idle_instances(w)
            freed = Tally()
            for _, o in idle:
                freed.add(o.spec.resources)
            w.committed.remove(freed.snapshot())
            fits = w.committed.room_for(need, w.info.resources)
            w.committed.add(freed.snapshot())
            if not fits:
                continue
            for name, o in idle:
                del w.libs[name]
                w.committed.remove(o.spec.resources)
                self.out.append(SendRemove(w.id, name))
                self.transactions.append(f"LIBRARY {name} evicted worker={w.id} for=task")
                if w.committed.room_for(need, w.info.resources):
                    return w
        return None

    def _evict_idle_library_for(self, lib: LibraryEntry, workers: list[WorkerEntry]) -> WorkerEntry | None:
        """Remove one idle instance of another library (no calls running or waiting) from a
        worker where that frees enough room for ``lib``; the worker, or None."""
        for w in workers:
            if lib.spec.name in w.libs:
                continue
            for other, inst in list(w.libs.items()):
                o = self.libraries.get(other)
                if inst.active or inst.state != "ready" or o is None or o.ready:
                    continue
                w.committed.remove(o.spec.resources)
                if w.committed.room_for(lib.spec.resources, w.info.resources):
                    del w.libs[other]
                    self.out.append(SendRemove(w.id, other))
                    self.transactions.append(f"LIBRARY {other} evicted worker={w.id} for={lib.spec.name}")
                    return w
                w.committed.add(o.spec.resources)
        return None

    def _dispatch_call(self, t: TaskEntry, w: WorkerEntry, inst: Instance, stages: list[StageIn]) -> None:
        inst.active += 1
        w.calls += 1
        self._dispatch_to(t, w, stages)

    # ------------------------------------------------------------- time

    def tick(self, now: float) -> None:
        """Time passed: find workers that stopped talking; undeclare what is no longer in use."""
        self.now = now
        if self.undeclare_later:
            later, self.undeclare_later = self.undeclare_later, {}
            by_client: dict[ClientId, list[CacheName]] = {}
            for name, client in later.items():
                by_client.setdefault(client, []).append(name)
            for client, names in by_client.items():
                self.undeclare(client, names)
        for w in list(self.workers.values()):
            if w.state == WorkerState.RECOVERING:
                if w.deadline is not None and now > w.deadline:
                    self.worker_lost(w.id, "did not reconnect after the manager restarted")
            elif now - w.last_seen > self.settings.heartbeat_timeout:
                self.worker_lost(w.id, f"silent for {now - w.last_seen:.1f}s")

    # ------------------------------------------------------------- scheduling

    def schedule(self) -> None:
        """Place ready tasks on workers with room, highest priority first."""
        workers = [w for w in self.workers.values() if w.state == WorkerState.CONNECTED]
        if not workers:
            return
        if self.ready:
            self._schedule_tasks(workers)
        for lib in self.libraries.values():
            if lib.ready:
                self._schedule_calls(lib, workers)

    def _schedule_tasks(self, workers: list[WorkerEntry]) -> None:
        skipped: list[tuple[float, int, TaskId]] = []
        ready = self.ready
        sizes = [w.info.resources for w in workers]
        peers = self._peers()
        biggest = Resources.model_construct(
            cores=max(r.cores for r in sizes),
            memory=max(r.memory for r in sizes),
            disk=max(r.disk for r in sizes),
            gpus=max(r.gpus for r in sizes),
        )
        budget = 1000  # tasks we may look at and skip in one cycle
        evicted = False
        while ready and budget > 0:
            if not any(self._has_room(w) for w in workers) and (
                evicted or not any(self._idle_instances(w) for w in workers)
            ):
                break
            item = heapq.heappop(ready)
            t = self.tasks.get(item[2])
            if t is None or t.state != S.READY:
                continue
            need = t.spec.resources
            if not need.fits_in(biggest) and not self._fits_some_worker(need, workers):
                t.unschedulable = True
                self.unschedulable.add(t.spec.id)
                self.transactions.append(f"TASK {t.spec.id} unschedulable {res_kv(need)}")
                continue
            chosen = self._pick(need, workers)
            if chosen is None and self.libraries and not evicted:
                # an idle library may be holding the room this task needs
                evicted = True
                chosen = self._evict_idle_libraries(need, workers)
            stages = None
            if chosen is not None and t.spec.inputs:
                stages = dataplane.stage_for(self, self.catalog, t, chosen, peers)
                if stages is None:
                    chosen = None  # an input is on its way to where it will come from: wait
            if chosen is None:
                skipped.append(item)
                budget -= 1
                continue
            self._dispatch_to(t, chosen, stages)
        for item in skipped:
            heapq.heappush(ready, item)

    @staticmethod
    def _fits_some_worker(need: Resources, workers: list[WorkerEntry]) -> bool:
        return any(need.fits_in(w.info.resources) for w in workers)

    def _has_room(self, w: WorkerEntry) -> bool:
        total = w.info.resources.cores
        return w.committed.cores < total * (1 + self.prefetch) - 1e-9 and len(
            w.tasks
        ) - w.calls < self._max_tasks(w)

    @property
    def prefetch(self) -> int:
        """How deep to queue on workers now: only while recent tasks have been short."""
        if self.avg_wall is None or self.avg_wall > self.settings.prefetch_below:
            return 0
        return self.settings.prefetch

    def _max_tasks(self, w: WorkerEntry) -> int:
        return (1 + self.prefetch) * max(1, int(w.info.resources.cores))

    def _pick(self, need: Resources, workers: list[WorkerEntry]) -> WorkerEntry | None:
        best: WorkerEntry | None = None
        best_free = -1.0
        for w in workers:  # first: a worker where it runs at once, the emptiest one
            free_cores = w.info.resources.cores - w.committed.cores
            if free_cores > best_free and w.committed.room_for(need, w.info.resources):
                best, best_free = w, free_cores
        if best is not None or not self.prefetch:
            return best
        # then: queue it on a worker that can run it later, holding up to (1 + prefetch)
        # times its cores in tasks; the least loaded first
        load = 0.0
        for w in workers:
            total = w.info.resources
            # library instances keep their cores: a task queued behind an idle one would
            # wait for ever (it is evicted only when no worker can take the task)
            lib_cores = sum(lib.spec.resources.cores for n in w.libs if (lib := self.libraries.get(n)))
            if (
                need.fits_in(total)
                and need.cores <= total.cores - lib_cores + 1e-9
                and w.committed.cores + need.cores <= total.cores * (1 + self.prefetch) + 1e-9
                and len(w.tasks) - w.calls < self._max_tasks(w)
            ):
                mine = w.committed.cores / max(total.cores, 1e-9)
                if best is None or mine < load:
                    best, load = w, mine
        return best

    def _peers(self) -> dict[WorkerId, tuple[str | None, str]]:
        """Transfer address and node of every worker that can serve files."""
        return {
            wid: (w.info.transfer_address, w.info.cache_group or w.info.node)
            for wid, w in self.workers.items()
            if w.state in (WorkerState.CONNECTED, WorkerState.DRAINING)
        }

    def _dispatch_to(self, t: TaskEntry, w: WorkerEntry, stages: list[StageIn] | None = None) -> None:
        t.attempt += 1
        t.worker = w.id
        w.tasks[t.spec.id] = t.attempt
        w.committed.add(t.spec.resources)
        w.queued += 1
        w.idle_since = None
        self._move(t, S.DISPATCHED, f"to {w.id}")
        sd = self._dispatch.get(w.id)
        if sd is None:
            sd = self._dispatch[w.id] = SendDispatch(w.id, [], [])
        index = None
        if t.payload is not None:
            index = len(sd.frames)
            sd.frames.append(t.payload)
        if stages is None and t.spec.inputs:
            stages = dataplane.stage_for(self, self.catalog, t, w, self._peers()) or []
        sd.tasks.append(Assignment(spec=t.spec, attempt=t.attempt, stage=stages or [], payload=index))

    # ------------------------------------------------------------- recovery

    def restore(self, snap: Snapshot) -> None:
        """Rebuild state from what the store holds, after a manager restart: tasks and their
        uncollected results, libraries (before the calls that wait on them), the workers
        seen (recovering until they say hello again), the replicas they held, the totals."""
        self.next_task_id = int(snap.meta.get("next_task_id", "1"))
        if "totals" in snap.meta:
            self.totals.update(json.loads(snap.meta["totals"]))
            self._stored_totals = dict(self.totals)
        for lname, (lspec, lpayload) in snap.libraries.items():
            self.libraries[lname] = LibraryEntry(lspec, lpayload, ClientId(""))
        for tid, (spec, payload) in snap.specs.items():
            rec = snap.records.get(tid)
            if rec is None:
                continue
            t = TaskEntry(
                spec,
                payload,
                rec.client,
                TaskState(rec.state),
                rec.seq,
                rec.attempt,
                rec.failures,
                rec.lost,
                rec.worker,
            )
            if tid in snap.results:
                t.result, t.frames = snap.results[tid]
            self.tasks[tid] = t
            self.counts[t.state] += 1
            for b in spec.outputs:
                if b.kind == FileKind.TEMP and b.cache_name is not None:
                    self.producers.setdefault(b.cache_name, tid)
        self._seq = itertools.count(max((t.seq for t in self.tasks.values()), default=0) + 1)
        deadline = self.now + self.settings.recover_grace
        for wid, info in snap.workers.items():
            self.workers[wid] = WorkerEntry(info, WorkerState.RECOVERING, self.now, deadline=deadline)
        for (wid, name), group in snap.replicas.items():
            if wid in self.workers:  # a replica on a worker that may come back
                self.catalog.add(name, wid, group)
        self.catalog.journal.clear()
        for t in list(self.tasks.values()):
            if t.spec.kind == TaskKind.CALL and (t.spec.library or "") not in self.libraries:
                if t.state not in FINAL:  # its library was never stored: it cannot run
                    self._finish(
                        t, S.FAILED, Outcome.LIBRARY_ERROR, error=f"library {t.spec.library!r} is gone"
                    )
                continue
            if t.state in (S.WAITING, S.RETRYING):
                lacking = [
                    b.cache_name
                    for b in t.spec.inputs
                    if b.kind == FileKind.TEMP
                    and b.cache_name is not None
                    and not self.catalog.available(b.cache_name)
                ]
                if t.state == S.WAITING and lacking:
                    for n in lacking:  # it waits on: a replica, or its producer (still to run)
                        self.waiting_for.setdefault(n, set()).add(t.spec.id)
                    for n in lacking:
                        p = self.tasks.get(self.producers.get(n, TaskId(0)))
                        if p is not None and p.state == S.DONE:  # made, but no copy is known
                            dataplane.regenerate(self, self.catalog, n, "no copy known after a restart")
                else:
                    self._make_ready(t, "recovered")
            elif t.state == S.READY:
                item = (-t.spec.priority, t.seq, t.spec.id)
                if t.spec.kind == TaskKind.CALL:
                    heapq.heappush(self.libraries[t.spec.library or ""].ready, item)
                else:
                    heapq.heappush(self.ready, item)
            elif t.state in (S.DISPATCHED, S.RUNNING):
                w = self.workers.get(t.worker) if t.worker else None
                if w is None:
                    self._make_ready(t, "recovered; its worker is unknown")
                else:
                    self._attach(w, t)
            elif t.result is not None:
                self._pending_results.setdefault(t.client, []).append((t.result, t.frames))
        self.batch = WriteBatch()  # what was restored is stored already; the moves are dirty

    def full_batch(self) -> WriteBatch:
        """Everything this manager holds, as one batch that replaces what the store has
        (after the store lost it: a Redis restarted without persistence)."""
        b = WriteBatch(reseed=True)
        for tid, t in self.tasks.items():
            b.specs[tid] = (t.spec, t.payload)
            b.records[tid] = t.record()
            if t.result is not None:
                b.results[tid] = (t.result, t.frames)
        for wid, w in self.workers.items():
            if w.state != WorkerState.LOST:
                b.workers[wid] = w.info.model_copy(update={"running": [], "cached": []})
        b.meta["next_task_id"] = str(self.next_task_id)
        b.meta["totals"] = json.dumps(self.totals)
        for name, lib in self.libraries.items():
            b.libraries[name] = (lib.spec, lib.payload)
        for name, held in self.catalog.holders.items():
            for wid in held:
                holder = self.workers.get(wid)
                if holder is not None:
                    b.replicas[(wid, name)] = holder.info.cache_group or holder.info.node
        return b

    # ------------------------------------------------------------- views

    def demand(self) -> Resources:
        """Resources asked for by tasks that wait for a worker."""
        total = Tally()
        for t in self.tasks.values():
            if t.state in (S.READY, S.WAITING, S.RETRYING):
                total.add(t.spec.resources)
        return total.snapshot()
