"""The manager's pure core: workflow state, events in, instructions out.

No sockets and no Redis here. The service turns what it reads (a client submitted, a worker
reported, time passed) into typed events (:mod:`kubevine.manager.events`) and hands each to
:meth:`Core.handle`, the one entry; each event updates the state, records what must be
persisted in the current :class:`~kubevine.manager.store.WriteBatch`, and appends instructions
(:mod:`kubevine.manager.instructions`: dispatch these tasks to that worker, deliver these
results to that client) to ``core.out``. Once per cycle the service takes both, persists the
batch first, then carries out the instructions, so nothing is announced that is not yet
durable. A core made with ``record=True`` keeps a :class:`Journal` of what it handled and
handed out, and :func:`replay` runs it again.

Scheduling packs tasks onto workers by cores, memory, disk and gpus, highest priority
first. To keep a fast worker busy between round trips it may also hold a few queued
tasks beyond what it can run at once (``prefetch``); the worker starts them only when
its own resources allow, so a queued task never shares resources it does not have.

The core keeps its seams apart: task moves and their effects are the :class:`Lifecycle`
(next to the transition table in :mod:`kubevine.manager.states`), what workers report is
:mod:`kubevine.manager.workers`, files and transfers are :mod:`kubevine.manager.dataplane`,
function calls and library instances are :mod:`kubevine.manager.libraries`, where a task may
go and when are :mod:`kubevine.manager.affinity` and :mod:`kubevine.manager.timing`, the
settings clients tune are :mod:`kubevine.manager.tuning`, and a restart is
:mod:`kubevine.manager.recovery`.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import assert_never

from kubevine import txformat
from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager import dataplane, libraries, placement, recovery, timing, tuning, workers
from kubevine.manager.catalog import Catalog
from kubevine.manager.compact import compact
from kubevine.manager.entries import TaskEntry, WorkerEntry
from kubevine.manager.events import (
    CancelRequested,
    ClientConnected,
    ClientLeft,
    Clock,
    DrainRequested,
    Event,
    FileKept,
    FilesArrived,
    FilesExpected,
    FilesUndeclared,
    IdsRequested,
    LibraryInstalled,
    LibraryRemoved,
    LibraryReported,
    Restored,
    RestoreDone,
    ResultsAcked,
    Schedule,
    Shorthands,
    TasksRestored,
    TasksSubmitted,
    Tick,
    Tuned,
    UploadFailed,
    WorkerConnected,
    WorkerLost,
    WorkerSeen,
    WorkerUpdated,
)
from kubevine.manager.instructions import (
    ClientError,
    Instruction,
    SendAck,
    SendDispatch,
    SendForget,
    SendIdBlock,
    SendResults,
    SendWelcome,
)
from kubevine.manager.libraries import LibraryEntry
from kubevine.manager.room import RoomIndex
from kubevine.manager.states import FINAL, Lifecycle, TaskState, WorkerState
from kubevine.manager.store import WriteBatch
from kubevine.protocol import (
    Assignment,
    FileKind,
    Outcome,
    StageIn,
    TaskRef,
    TaskSpec,
    walk_bindings,
)
from kubevine.resources import Resources

log = logging.getLogger(__name__)

S = TaskState
ID_BLOCK = 1_000_000  # task ids granted to a client at a time


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
    # Placements (tasks and calls) in one scheduling pass at most: the rest go next turn, so a
    # pass never holds the service's loop long (heartbeats and hellos are read in between).
    pass_placements: int = 500


@dataclass(slots=True)
class Taken:
    """The end of a cycle: what :meth:`Core.take` handed to the service."""

    batch: WriteBatch
    out: list[Instruction]


@dataclass(slots=True)
class Journal:
    """What a core handled and handed out, in order: enough to run it again (:func:`replay`)."""

    settings: Settings
    start: float  # the core's clock when it was made
    entries: list[Event | Taken] = field(default_factory=list)


class Core(Shorthands):
    """All workflow state, and every decision about it."""

    def __init__(
        self, settings: Settings | None = None, *, now: float | None = None, record: bool = False
    ) -> None:
        self.settings = settings or Settings()
        self.now = now if now is not None else time.time()
        self.tasks: dict[TaskId, TaskEntry] = {}
        self.workers: dict[WorkerId, WorkerEntry] = {}
        self.libraries: dict[str, LibraryEntry] = {}
        self.ready: list[tuple[float, int, TaskId]] = []  # (-priority, seq, id)
        self.unschedulable: set[TaskId] = set()
        self.known_files: set[CacheName] = set()
        self.expected: set[CacheName] = set()  # client files arriving in pieces, not yet whole
        self.tunables = tuning.Tunables()  # what clients set with m.tune
        self.ends: list[tuple[float, int, TaskId]] = []  # (time_end, seq, task): a heap
        self.not_before: list[tuple[float, int, TaskId]] = []  # (time_start, seq, task): ready, held back
        # which worker and node holds which file
        self.catalog = Catalog(source_limit=self.settings.transfers_per_source)
        self.producers: dict[CacheName, TaskId] = {}  # temp file -> the task that makes it
        self.undeclared: set[CacheName] = set()  # until used again: a copy reported late is deleted
        self.undeclare_later: dict[CacheName, ClientId] = {}  # in use when undeclared: retried on tick
        self.waiting_for: dict[CacheName, set[TaskId]] = {}  # file -> tasks waiting for it to exist
        self.moved: dict[str, int] = {}  # bytes moved to workers, by source kind
        self.connected_clients: set[ClientId] = set()
        self.life = Lifecycle(self)
        self.stored_totals = dict(self.life.totals)
        self.next_task_id = 1
        self.batch = WriteBatch()
        self.out: list[Instruction] = []
        self.transactions: list[str] = []  # lines for the transactions log (txformat's writers)
        self.avg_wall: float | None = None  # moving average of attempts' wall time
        self.journal = Journal(self.settings, self.now) if record else None
        self._seq = itertools.count()
        self._dispatch: dict[WorkerId, SendDispatch] = {}
        self.acks: dict[WorkerId, list[TaskRef]] = {}
        self.room = RoomIndex()  # connected workers with room, the emptiest first
        self.pass_left = 0  # placements the current scheduling pass may still make
        self.behind = False  # the last pass stopped at its budget: schedule again soon
        self.workers_epoch = 0  # bumped when a worker connects, drains or is lost
        self.online: dict[WorkerId, WorkerEntry] = {}  # the connected workers, kept as they come and go
        self._live: tuple[int, list[WorkerEntry]] | None = None
        self._biggest: Resources | None = None
        self.restoring: recovery.Restoring | None = None  # a restore in slices, while it lasts

    @property
    def counts(self) -> dict[TaskState, int]:
        """Tasks held, by state."""
        return self.life.counts

    @property
    def totals(self) -> dict[str, int]:
        """Tasks submitted, done, failed, cancelled and attempts retried, since the start."""
        return self.life.totals

    def story(self, task_id: TaskId) -> list[tuple[float, str, str]]:
        """Every state a task went through, with when and why."""
        return self.life.story(task_id)

    # ------------------------------------------------------------- the one entry

    def handle(self, event: Event) -> None:
        """Take one event: change the state, record the writes, append instructions."""
        if self.journal is not None:
            self.journal.entries.append(event)
        match event:  # the frequent ones first
            case WorkerUpdated():
                workers.update(self, event)
            case WorkerSeen():
                w = self.workers.get(event.worker)
                if w is not None:
                    w.last_seen = self.now
            case Clock():
                self.now = event.now
            case Schedule():
                self._schedule()
            case TasksSubmitted():
                self._submit(event.client, event.specs, event.payloads)
            case ResultsAcked():
                self._results_acked(event.client, event.task_ids)
            case Tick():
                self._tick(event.heard_until)
            case ClientConnected():
                self._client_connected(event.client, event.attach)
            case ClientLeft():
                self.connected_clients.discard(event.client)
                if self.restoring is not None:
                    self.restoring.clients.pop(event.client, None)
            case IdsRequested():
                self.out.append(SendIdBlock(event.client, *self._grant_ids()))
            case FilesArrived():
                self._files_arrived(event.names)
            case FilesExpected():
                self.expected.update(event.names)
            case UploadFailed():
                self._upload_failed(event.name, event.why)
            case Tuned():
                self._tune(event.client, event.name, event.value)
            case FileKept():
                self.known_files.add(event.name)
                self.batch.files[event.name] = event.data  # a new manager can serve it
            case FilesUndeclared():
                self._undeclare(event.client, event.names)
            case CancelRequested():
                self._cancel(event.client, event.task_ids, event.tag)
            case LibraryInstalled():
                libraries.install(self, event.client, event.spec, event.payload)
            case LibraryRemoved():
                libraries.remove(self, event.name)
            case LibraryReported():
                libraries.reported(self, event.worker, event.name, event.state, event.error)
            case WorkerConnected():
                workers.connected(self, event.info)
            case DrainRequested():
                workers.drain(self, event.workers)
            case WorkerLost():
                workers.lost(self, event.worker, event.why)
            case Restored(snapshot, whole):
                if whole:
                    recovery.restore(self, snapshot)
                else:
                    recovery.begin(self, snapshot)
            case TasksRestored():
                recovery.add(self, event.snapshot)
            case RestoreDone():
                recovery.done(self)
            case _:
                assert_never(event)

    def take(self) -> tuple[WriteBatch, list[Instruction]]:
        """Hand the cycle's writes and instructions to the service, and start afresh."""
        life = self.life
        for tid, t in life.dirty.items():
            if tid in self.tasks:
                self.batch.records[tid] = t.record()
        life.dirty.clear()
        if self.totals != self.stored_totals:
            self.stored_totals = dict(self.totals)
            self.batch.meta["totals"] = json.dumps(self.totals)
        if self.catalog.journal:
            self.batch.replicas.update(self.catalog.journal)
            self.catalog.journal.clear()
        self.out.extend(self._dispatch.values())
        self._dispatch.clear()
        for wid, refs in self.acks.items():
            self.out.append(SendAck(wid, refs))
        self.acks.clear()
        undelivered = life.undelivered
        for cid, results in undelivered.items():
            if cid in self.connected_clients:
                self.out.append(SendResults(cid, results))
        life.undelivered = {c: r for c, r in undelivered.items() if c not in self.connected_clients}
        batch, out = self.batch, self.out
        self.batch, self.out = WriteBatch(), []
        if self.journal is not None:  # a copy: the persister may fold later batches into this one
            self.journal.entries.append(Taken(_copy_batch(batch), list(out)))
        return batch, out

    def reseq(self, start: int) -> None:
        """Number tasks submitted from now on from ``start`` (after a restore)."""
        self._seq = itertools.count(start)

    # ------------------------------------------------------------- clients

    def _client_connected(self, client: ClientId, attach: bool) -> None:
        if self.restoring is not None:  # its welcome lists its tasks: once all are loaded
            r = self.restoring.clients
            r[client] = r.get(client, False) or attach
            return
        self.welcome_client(client, attach)

    def welcome_client(self, client: ClientId, attach: bool) -> None:
        """Grant a block of task ids; re-send the results it has not acknowledged; on attach,
        tell it which of its tasks are still held."""
        self.connected_clients.add(client)
        first, count = self._grant_ids()
        mine = [t for t in self.tasks.values() if t.client == client]
        unacked = [(t.result, t.frames) for t in mine if t.result is not None]
        if unacked:
            self.life.undelivered.setdefault(client, []).extend(unacked)
        held = [t.spec for t in mine if t.result is not None or (t.state not in FINAL and not t.rerun)]
        self.out.append(SendWelcome(client, first, count, held if attach else []))

    def _grant_ids(self) -> tuple[TaskId, int]:
        first = TaskId(self.next_task_id)
        self.next_task_id += ID_BLOCK
        self.batch.meta["next_task_id"] = str(self.next_task_id)
        return first, ID_BLOCK

    def _files_arrived(self, names: Iterable[CacheName]) -> None:
        names = list(names)
        self.known_files.update(names)
        self.undeclared.difference_update(names)
        self.expected.difference_update(names)
        for n in names:
            self.undeclare_later.pop(n, None)
            if n in self.waiting_for:  # tasks that waited for its last piece
                dataplane.arrived(self, n)

    def _upload_failed(self, name: CacheName, why: str) -> None:
        """A client file that was on its way will not come: what waits for it fails."""
        self.expected.discard(name)
        for tid in self.waiting_for.pop(name, set()):
            t = self.tasks.get(tid)
            if t is not None and t.state == S.WAITING:
                error = f"input {name} did not reach the manager: {why}"
                self.life.finish(t, S.FAILED, Outcome.INPUT_MISSING, error=error)

    def _submit(self, client: ClientId, specs: Sequence[TaskSpec], payloads: Sequence[bytes | None]) -> None:
        dup: list[TaskId] = []
        life = self.life
        for spec, payload in zip(specs, payloads, strict=True):
            if spec.id in self.tasks:
                if self.tasks[spec.id].client != client:
                    dup.append(spec.id)
                continue  # the same client again (after a reconnect): already have it
            t = TaskEntry(compact(spec), payload, client, S.WAITING, next(self._seq))
            self.tasks[spec.id] = t
            life.admit(t)
            self.batch.specs[spec.id] = (spec, payload)
            why_not = libraries.call_problem(self, spec)
            if why_not is not None:
                life.finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=why_not)
                continue
            if not timing.admit(self, t):
                continue  # its end time is past
            missing = [
                b
                for b in walk_bindings(spec.inputs)
                if b.kind in (FileKind.LOCAL, FileKind.BUFFER)
                and (b.cache_name is None or b.cache_name not in self.known_files)
            ]
            if any(b.cache_name not in self.expected for b in missing):
                names = ", ".join(b.remote_name for b in missing)
                life.finish(
                    t,
                    S.FAILED,
                    Outcome.INPUT_MISSING,
                    error=f"input file(s) {names} never reached the manager",
                )
                continue
            why = dataplane.on_submit(self, self.catalog, t)
            if why is not None and why != "wait":
                life.finish(t, S.FAILED, Outcome.INPUT_MISSING, error=why)
                continue
            for b in missing:  # on their way in pieces: it waits for their last piece
                dataplane.wait_for(self, CacheName(b.cache_name or ""), t)
            if why == "wait" or missing:
                continue  # stays waiting until its inputs exist
            life.ready(t, "submitted")
        if dup:
            self.out.append(
                ClientError(client, "duplicate_task_id", f"task ids already in use: {dup[:10]}", dup)
            )

    def _results_acked(self, client: ClientId, task_ids: Iterable[TaskId]) -> None:
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
            self.life.forget(t)

    def _makes_live_temps(self, t: TaskEntry) -> bool:
        """It wrote a temp file that is still declared (it may have to write it again)."""
        return any(
            b.kind == FileKind.TEMP
            and b.cache_name is not None
            and self.producers.get(b.cache_name) == t.spec.id
            for b in t.spec.outputs
        )

    def _undeclare(self, client: ClientId, names: Iterable[CacheName]) -> None:
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
                self.life.forget(p)  # its result was delivered: nothing left of it to keep
            else:  # kept for its result or its other temps: a restart must not make it a producer again
                outputs = [b for b in p.spec.outputs if b.cache_name != name]
                p.spec = p.spec.model_copy(update={"outputs": outputs})
                self.batch.specs[p.spec.id] = (p.spec, p.payload)
        for wid, forgotten in by_worker.items():
            self.forget_on(wid, forgotten)

    def forget_on(self, wid: WorkerId, names: list[CacheName]) -> None:
        """Tell a worker to delete files (undeclared ones, or reported after their undeclare)."""
        self.out.append(SendForget(wid, names))
        self.transactions.extend(txformat.cache(wid, "forget", n) for n in names)

    def _tune(self, client: ClientId, name: str, value: float) -> None:
        """A client set one of the workflow's settings (TaskVine's ``m.tune``); it is stored,
        so a restarted manager keeps it."""
        why = tuning.apply(self.tunables, name, value)
        if why is not None:
            self.out.append(ClientError(client, "bad_setting", why, []))
            return
        log.info("client %s: tune(%r, %s)", client, name, value)
        self.apply_tunables()
        self.batch.meta["tunables"] = json.dumps(asdict(self.tunables))

    def apply_tunables(self) -> None:
        """Hand the settings to the parts that read them."""
        tun = self.tunables
        self.catalog.peer_limit = tun.worker_source_max_transfers
        self.catalog.forgive_after = tun.transient_error_interval

    def _cancel(self, client: ClientId, task_ids: Iterable[TaskId], tag: str | None) -> None:
        chosen = [self.tasks[i] for i in task_ids if i in self.tasks]
        if tag is not None:
            chosen += [t for t in self.tasks.values() if t.spec.tag == tag]
        for t in chosen:
            if t.state in FINAL or t.client != client:
                continue
            if t.state in (S.DISPATCHED, S.RUNNING) and t.worker is not None:
                workers.release(self, t, kill=True)
            self.unschedulable.discard(t.spec.id)
            self.life.finish(t, S.CANCELLED, Outcome.CANCELLED, error="cancelled by the client")

    # ------------------------------------------------------------- time

    def _tick(self, heard_until: float | None = None) -> None:
        """Find workers that stopped talking; undeclare what is no longer in use; fail tasks
        past their end time; trust failed sources again (tune transient-error-interval).

        ``heard_until``: the service had read everything that arrived until then (None: until
        now). A worker is silent when it said nothing for the heartbeat timeout *before* that
        time, so messages still unread in the manager's own backlog never make it lost."""
        now = self.now
        heard = now if heard_until is None else min(now, heard_until)
        self.room.rebuild(self)  # the index's safety net: room changed without a touch
        placement.unqueue(self)
        timing.expire(self)
        self.catalog.forgive(now)
        if self.undeclare_later:
            later, self.undeclare_later = self.undeclare_later, {}
            by_client: dict[ClientId, list[CacheName]] = {}
            for name, client in later.items():
                by_client.setdefault(client, []).append(name)
            for client, names in by_client.items():
                self._undeclare(client, names)
        for w in list(self.workers.values()):
            if w.state == WorkerState.RECOVERING:
                if w.deadline is not None and now > w.deadline:
                    workers.lost(self, w.id, "did not reconnect after the manager restarted")
            elif heard - w.last_seen > self.settings.heartbeat_timeout:
                workers.lost(self, w.id, f"silent for {heard - w.last_seen:.1f}s")

    # ------------------------------------------------------------- scheduling

    def joined(self, w: WorkerEntry) -> None:
        """``w`` is connected now (a hello): it may take tasks."""
        self.online[w.id] = w
        self.workers_epoch += 1
        if self._biggest is not None:
            self._biggest = _most(self._biggest, w.info.resources)

    def left(self, wid: WorkerId) -> None:
        """``wid`` takes no more tasks (it drains, or it is lost)."""
        if self.online.pop(wid, None) is not None:
            self.workers_epoch += 1
            self._biggest = None

    def live(self) -> list[WorkerEntry]:
        """The connected workers (a list made again only after one came or left)."""
        cached = self._live
        if cached is None or cached[0] != self.workers_epoch:
            cached = self._live = (self.workers_epoch, list(self.online.values()))
        return cached[1]

    def biggest(self) -> Resources:
        """The most of each resource one connected worker has."""
        if self._biggest is None:
            b = Resources.model_construct(cores=0, memory=0, disk=0, gpus=0)
            for w in self.online.values():
                b = _most(b, w.info.resources)
            self._biggest = b
        return self._biggest

    def _schedule(self) -> None:
        """Place ready tasks on workers with room, highest priority first; then calls; at
        most ``settings.pass_placements`` of them (``behind`` says more are waiting)."""
        self.behind = False
        if not self.ready and not any(lib.ready for lib in self.libraries.values()) and not self.not_before:
            return  # nothing to place: no walk over the workers either
        live = self.live()
        if self.tunables.wait_for_workers:  # tune wait-for-workers: nothing runs before N are here
            if len(live) < self.tunables.wait_for_workers:
                return
            log.info("%d worker(s) connected: dispatching begins", len(live))
            self.tunables.wait_for_workers = 0
            self.batch.meta["tunables"] = json.dumps(asdict(self.tunables))
        if not live:
            return
        timing.release(self)
        self.pass_left = self.settings.pass_placements
        if self.ready:
            placement.schedule_tasks(self, live)
        for lib in self.libraries.values():
            if lib.ready and self.pass_left > 0:
                libraries.schedule_calls(self, lib, live)
            elif lib.ready:
                self.behind = True

    @property
    def prefetch(self) -> int:
        """How deep to queue on workers now: only while recent tasks have been short."""
        if self.avg_wall is None or self.avg_wall > self.settings.prefetch_below:
            return 0
        return self.settings.prefetch

    def peers(self) -> dict[WorkerId, tuple[str | None, str]]:
        """Transfer address and node of every worker that can serve files."""
        return {
            wid: (w.info.transfer_address, w.info.cache_group or w.info.node)
            for wid, w in self.workers.items()
            if w.state in (WorkerState.CONNECTED, WorkerState.DRAINING)
        }

    def dispatch(self, t: TaskEntry, w: WorkerEntry, stages: list[StageIn] | None = None) -> None:
        """Send ``t`` to ``w`` (in this cycle's dispatch to it), its inputs staged by ``stages``."""
        t.attempt += 1
        t.worker = w.id
        w.tasks[t.spec.id] = t.attempt
        w.committed.add(t.spec.resources)
        w.queued += 1
        w.idle_since = None
        self.pass_left -= 1
        self.room.touch(w)
        self.life.move(t, S.DISPATCHED, f"to {w.id}")
        sd = self._dispatch.get(w.id)
        if sd is None:
            sd = self._dispatch[w.id] = SendDispatch(w.id, [], [])
        index = None
        if t.payload is not None:
            index = len(sd.frames)
            sd.frames.append(t.payload)
        if stages is None and t.spec.inputs:
            stages = dataplane.stage_for(self, self.catalog, t, w, self.peers()) or []
        sd.tasks.append(Assignment(spec=t.spec, attempt=t.attempt, stage=stages or [], payload=index))


def _most(a: Resources, b: Resources) -> Resources:
    """The most of each resource of ``a`` and ``b``."""
    if b.fits_in(a):
        return a
    return Resources.model_construct(
        cores=max(a.cores, b.cores),
        memory=max(a.memory, b.memory),
        disk=max(a.disk, b.disk),
        gpus=max(a.gpus, b.gpus),
    )


def _copy_batch(b: WriteBatch) -> WriteBatch:
    return WriteBatch(**{f.name: copy.copy(getattr(b, f.name)) for f in fields(b)})


def replay(journal: Journal) -> tuple[Core, list[Taken]]:
    """Run a recorded core again: a fresh core handles the same events, taking its writes and
    instructions where the recorded one did. Returns the new core and what it handed out."""
    core = Core(journal.settings, now=journal.start)
    taken: list[Taken] = []
    for entry in journal.entries:
        if isinstance(entry, Taken):
            taken.append(Taken(*core.take()))
        else:
            core.handle(entry)
    return core, taken
