"""A manager's state from its store, and all of it back to the store.

:func:`restore` is how a restarted manager picks up a workflow: it rebuilds the core from
the snapshot the store holds (tasks and their uncollected results, libraries, the workers seen
and the replicas they held, the totals) and puts each task where it can go on: queued again,
waiting for an input, or attached to a worker that is expected back. :func:`full_batch` is the
reverse, for a store that lost the workflow (a Redis restarted without persistence): every
thing the manager holds, as one batch that replaces what the store has.

A store holding many tasks is restored in slices while the manager serves (:func:`begin`,
:func:`add`, :func:`done`): loading a million tasks takes half a minute in Python, and a
restarted manager must dispatch long before that. What a peer names meanwhile is loaded first
(the service does that I/O); the rest arrives slice by slice. Until :func:`done`, clients wait
for their welcome (it lists their tasks, and a resubmission must find every task it repeats),
and tasks start in the order they are read rather than by priority.

All are pure functions of the core's state, like the rest of the core; the service calls
them through the :class:`~kubevine.manager.events.Restored`,
:class:`~kubevine.manager.events.TasksRestored` and
:class:`~kubevine.manager.events.RestoreDone` events.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from kubevine.ids import ClientId, TaskId
from kubevine.manager import dataplane, tuning, workers
from kubevine.manager.compact import compact
from kubevine.manager.entries import TaskEntry, WorkerEntry
from kubevine.manager.libraries import LibraryEntry
from kubevine.manager.states import FINAL, TaskState, WorkerState
from kubevine.manager.store import Snapshot, WriteBatch
from kubevine.protocol import FileKind, Outcome, TaskKind

if TYPE_CHECKING:
    from kubevine.manager.core import Core

S = TaskState


@dataclass(slots=True)
class Restoring:
    """A restore in slices, while it lasts (``Core.restoring``)."""

    started: float
    forgotten: set[TaskId] = field(default_factory=set)  # loaded, then finished and forgotten
    clients: dict[ClientId, bool] = field(default_factory=dict)  # hellos waiting: attach?
    unsure: list[TaskId] = field(default_factory=list)  # waited on a producer not loaded yet
    loaded: int = 0
    max_seq: int = 0


def restore(core: Core, snap: Snapshot) -> None:
    """Rebuild the core from what the store holds, after a manager restart: libraries (before
    the calls that wait on them), the workers seen (recovering until they say hello again),
    the replicas they held, the totals, the tasks; then put each unfinished task back on its
    way."""
    begin(core, snap, sliced=False)
    add(core, snap)
    done(core)
    core.batch = WriteBatch()  # what was restored is stored already; the moves are dirty


def begin(core: Core, snap: Snapshot, *, sliced: bool = True) -> None:
    """Everything but the tasks (``snap``'s task tables are ignored); with ``sliced``, the
    tasks follow in :func:`add` while the manager serves."""
    core.restoring = Restoring(core.now)
    core.next_task_id = int(snap.meta.get("next_task_id", "1"))
    if "totals" in snap.meta:
        core.totals.update(json.loads(snap.meta["totals"]))
    if "tunables" in snap.meta:  # what clients set with m.tune
        core.tunables = tuning.Tunables(**json.loads(snap.meta["tunables"]))
        core.apply_tunables()
        core.stored_totals = dict(core.totals)
    for lname, (lspec, lpayload) in snap.libraries.items():
        core.libraries[lname] = LibraryEntry(lspec, lpayload, ClientId(""))
    deadline = core.now + core.settings.recover_grace
    for wid, info in snap.workers.items():
        core.workers[wid] = WorkerEntry(info, WorkerState.RECOVERING, core.now, deadline=deadline)
    for (wid, name), group in snap.replicas.items():
        if wid in core.workers:  # a replica on a worker that may come back
            core.catalog.add(name, wid, group)
    core.catalog.journal.clear()
    if sliced:
        core.batch = WriteBatch()


def add(core: Core, snap: Snapshot) -> None:
    """Tasks read from the store: each one not seen before is loaded and put on its way. A
    slice may repeat a task (a scan may return one twice, and what a peer named was loaded
    ahead of its slice), or hold one this manager finished and forgot meanwhile: both are
    skipped."""
    r = core.restoring
    assert r is not None, "tasks restored outside a restore"
    for t in _load_tasks(core, snap, r):
        _resume(core, t, r)


def done(core: Core) -> None:
    """Every task is loaded: what waited on a producer not loaded then is judged, and the
    clients that said hello meanwhile are welcomed."""
    r = core.restoring
    assert r is not None, "a restore ended that never began"
    core.restoring = None
    core.reseq(r.max_seq + 1)  # tasks submitted from now on come after every stored one
    for tid in r.unsure:
        t = core.tasks.get(tid)
        if t is None or t.state != S.WAITING:
            continue
        for b in t.spec.inputs:
            n = b.cache_name
            if b.kind != FileKind.TEMP or n is None or core.catalog.available(n):
                continue
            p = core.tasks.get(core.producers.get(n, TaskId(0)))
            if p is not None and p.state == S.DONE:  # made, but no copy is known
                dataplane.regenerate(core, core.catalog, n, "no copy known after a restart")
    for cid, attach in r.clients.items():
        core.welcome_client(cid, attach)


def _load_tasks(core: Core, snap: Snapshot, r: Restoring) -> list[TaskEntry]:
    fresh: list[TaskEntry] = []
    for tid, (spec, payload) in snap.specs.items():
        rec = snap.records.get(tid)
        if rec is None or tid in core.tasks or tid in r.forgotten:
            continue
        t = TaskEntry(
            compact(spec),
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
        core.tasks[tid] = t
        core.life.restored(t)
        fresh.append(t)
        r.max_seq = max(r.max_seq, rec.seq)
        for b in spec.outputs:
            if b.kind == FileKind.TEMP and b.cache_name is not None:
                core.producers.setdefault(b.cache_name, tid)
    r.loaded += len(fresh)
    return fresh


def _resume(core: Core, t: TaskEntry, r: Restoring) -> None:
    """Put a restored task back on its way, by the state it was stored in."""
    life = core.life
    if t.state not in FINAL and t.spec.time_end is not None:  # its end time is watched again
        heapq.heappush(core.ends, (t.spec.time_end, t.seq, t.spec.id))
    if t.spec.kind == TaskKind.CALL and (t.spec.library or "") not in core.libraries:
        if t.state not in FINAL:  # its library was never stored: it cannot run
            life.finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=f"library {t.spec.library!r} is gone")
        return
    if t.state in (S.WAITING, S.RETRYING):
        lacking = [
            b.cache_name
            for b in t.spec.inputs
            if b.kind == FileKind.TEMP
            and b.cache_name is not None
            and not core.catalog.available(b.cache_name)
        ]
        if t.state == S.WAITING and lacking:
            for n in lacking:  # it waits on: a replica, or its producer (still to run)
                dataplane.wait_for(core, n, t)
            for n in lacking:
                p = core.tasks.get(core.producers.get(n, TaskId(0)))
                if p is None:  # not loaded yet, perhaps: judged once all are
                    r.unsure.append(t.spec.id)
                elif p.state == S.DONE:  # made, but no copy is known
                    dataplane.regenerate(core, core.catalog, n, "no copy known after a restart")
        else:
            life.ready(t, "recovered")
    elif t.state == S.READY:
        item = (-t.spec.priority, t.seq, t.spec.id)
        if t.spec.kind == TaskKind.CALL:
            heapq.heappush(core.libraries[t.spec.library or ""].ready, item)
        else:
            heapq.heappush(core.ready, item)
    elif t.state in (S.DISPATCHED, S.RUNNING):
        w = core.workers.get(t.worker) if t.worker else None
        if w is None:
            life.ready(t, "recovered; its worker is unknown")
        elif w.state != WorkerState.RECOVERING:
            # loaded after its worker said hello (the service loads what a hello names first,
            # so the worker did not name it): it came back without it, a loss as at its hello
            t.lost += 1
            life.ready(t, "recovered; its worker came back without it")
        else:
            workers.attach(core, w, t)
    elif t.result is not None:
        life.undelivered.setdefault(t.client, []).append((t.result, t.frames))


def full_batch(core: Core) -> WriteBatch:
    """Everything the core holds, as one batch that replaces what the store has (after the
    store lost it: a Redis restarted without persistence)."""
    b = WriteBatch(reseed=True)
    for tid, t in core.tasks.items():
        b.specs[tid] = (t.spec, t.payload)
        b.records[tid] = t.record()
        if t.result is not None:
            b.results[tid] = (t.result, t.frames)
    for wid, w in core.workers.items():
        if w.state != WorkerState.LOST:
            b.workers[wid] = w.info.model_copy(update={"running": [], "cached": []})
    b.meta["next_task_id"] = str(core.next_task_id)
    b.meta["totals"] = json.dumps(core.totals)
    b.meta["tunables"] = json.dumps(asdict(core.tunables))
    for name, lib in core.libraries.items():
        b.libraries[name] = (lib.spec, lib.payload)
    for name, held in core.catalog.holders.items():
        for wid in held:
            holder = core.workers.get(wid)
            if holder is not None:
                b.replicas[(wid, name)] = holder.info.cache_group or holder.info.node
    return b
