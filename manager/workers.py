"""Workers as the core sees them: hellos and reconnects, updates, results, drains and losses.

Pure, like :mod:`kubevine.manager.dataplane` and :mod:`kubevine.manager.libraries`: functions of
the core's state that change it, move tasks through its lifecycle and append instructions,
called by :meth:`kubevine.manager.core.Core.handle` for the worker events. A worker that says
hello again (or after a manager restart) is reconciled with what the core believed it ran; its
updates start and end attempts (a result of an older attempt is rejected by its number); a lost
worker's tasks go back to ready, counting towards their ``max_forsaken`` (else
:data:`MAX_LOST`) losses.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from kubevine import txformat
from kubevine.ids import TaskId, WorkerId
from kubevine.manager import dataplane
from kubevine.manager.entries import TaskEntry, WorkerEntry
from kubevine.manager.events import WorkerUpdated
from kubevine.manager.instructions import SendDrain, SendKill, SendPeerLost
from kubevine.manager.libraries import Instance, InstanceState
from kubevine.manager.states import WorkerState
from kubevine.protocol import (
    AttemptResult,
    ClientResult,
    Outcome,
    TaskKind,
    TaskRef,
    WorkerInfo,
    replace,
    walk_bindings,
)
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core

log = logging.getLogger(__name__)

S = TaskState
MAX_LOST = 5  # worker losses a task survives before it is failed (unless it sets max_forsaken)


def connected(core: Core, info: WorkerInfo) -> None:
    """A worker said hello: new, reconnecting, or back after a manager restart."""
    wid = info.worker_id
    old = core.workers.get(wid)
    w = WorkerEntry(info, WorkerState.CONNECTED, core.now, idle_since=core.now)
    core.workers[wid] = w
    if old is not None:  # replicas it no longer reports (evicted while we were apart)
        now_held = set(info.cached)
        group = old.info.cache_group or old.info.node
        for name in [n for n, h in core.catalog.holders.items() if wid in h and n not in now_held]:
            core.catalog.remove(name, wid, group)
    dataplane.on_cached(core, core.catalog, w, list(info.cached))
    core.batch.workers[wid] = info.model_copy(update={"running": [], "cached": []})
    core.transactions.append(
        txformat.worker_connected(
            wid, info.node, info.host, info.resources, len(info.cached), len(info.running)
        )
    )
    held = {r.task_id: r.attempt for r in info.running}
    for lname in info.libraries:  # instances it still runs (after a manager restart)
        lentry = core.libraries.get(lname)
        if lentry is not None and lname not in w.libs:
            w.libs[lname] = Instance(InstanceState.READY)
            w.committed.add(lentry.spec.resources)
    _reconcile(core, w, old, held)
    if w.tasks:
        w.idle_since = None
    core.joined(w)
    core.room.touch(w)
    for tid in list(core.unschedulable):  # what only this worker may run
        t = core.tasks[tid]
        if t.spec.resources.fits_in(info.resources) and set(t.spec.features).issubset(info.features):
            core.unschedulable.discard(tid)
            t.unschedulable = False
            lib = core.libraries.get(t.spec.library or "") if t.spec.kind == TaskKind.CALL else None
            heapq.heappush(lib.ready if lib is not None else core.ready, (-t.spec.priority, t.seq, tid))


def _reconcile(core: Core, w: WorkerEntry, old: WorkerEntry | None, held: dict[TaskId, int]) -> None:
    """Tasks we believe are on a worker that said hello again: re-attach those it still
    holds, requeue the others, adopt dispatches the store never recorded, kill the rest."""
    wid = w.id
    if old is not None:
        for tid, attempt in old.tasks.items():
            t = core.tasks.get(tid)
            if t is None or t.worker != wid or t.attempt != attempt:
                continue
            if held.get(tid) == attempt:
                attach(core, w, t)
            elif old.state != WorkerState.RECOVERING and t.state == S.DISPATCHED:
                # a live worker said hello again (on a new socket: its hello went unanswered
                # for a while) before this dispatch reached it: it never ran, nothing was lost
                requeue_lost(core, t, "its worker said hello again before it arrived", count=False)
            else:
                requeue_lost(core, t, "worker came back without it")
    for tid, a in held.items():
        t = core.tasks.get(tid)
        if tid in w.tasks or t is None or t.state != S.READY or a <= t.attempt:
            continue
        # a dispatch the store never recorded (the manager died first): the worker runs
        # or has run it; adopt that attempt instead of running the task again
        if t.spec.kind == TaskKind.CALL and (t.spec.library or "") not in w.libs:
            # not adopted (its instance is gone): killed below. Its next attempt is numbered
            # past this one, so a late word of the killed attempt is never taken for it
            t.attempt = a
            continue
        t.attempt, t.worker = a, wid
        core.life.move(t, S.DISPATCHED, f"adopted from {wid}")
        attach(core, w, t)
    stale = [TaskRef(task_id=tid, attempt=a) for tid, a in held.items() if tid not in w.tasks]
    if stale:
        core.out.append(SendKill(wid, stale))


def attach(core: Core, w: WorkerEntry, t: TaskEntry) -> None:
    """Count ``t`` on ``w`` again (a worker that came back holding it)."""
    w.tasks[t.spec.id] = t.attempt
    w.committed.add(t.spec.resources)
    core.room.touch(w)
    if t.state == S.DISPATCHED:
        w.queued += 1
    if t.spec.kind == TaskKind.CALL:
        w.calls += 1
        inst = w.libs.get(t.spec.library or "")
        if inst is not None:
            inst.active += 1


def lost(core: Core, wid: WorkerId, why: str) -> None:
    w = core.workers.pop(wid, None)
    if w is None:
        return
    core.left(wid)
    core.batch.workers[wid] = None
    core.transactions.append(txformat.worker_disconnected(wid, why, len(w.tasks)))
    log.warning("worker %s lost (%s); requeueing %d task(s)", wid, why, len(w.tasks))
    for tid in list(w.tasks):
        t = core.tasks.get(tid)
        if t is not None and t.worker == wid and t.state in (S.DISPATCHED, S.RUNNING):
            requeue_lost(core, t, f"worker {wid} {why}")
    dataplane.on_worker_lost(core, core.catalog, w)
    if w.info.transfer_address:  # fetches from it would wait for an answer that never comes
        for other in core.workers.values():
            if other.state in (WorkerState.CONNECTED, WorkerState.DRAINING):
                core.out.append(SendPeerLost(other.id, wid, w.info.transfer_address))


def requeue_lost(core: Core, t: TaskEntry, why: str, *, count: bool = True) -> None:
    """Queue ``t`` again, its worker gone (``count``: the loss counts towards its
    ``max_forsaken``)."""
    if count:
        t.lost += 1
    w = core.workers.get(t.worker) if t.worker else None
    if w is not None:
        release(core, t, kill=False)
    forsaken = t.spec.max_forsaken  # TaskVine's set_max_forsaken: how many losses it survives
    if t.lost > (MAX_LOST if forsaken is None else forsaken):
        outcome = Outcome.WORKER_LOST if forsaken is None else Outcome.FORSAKEN
        core.life.finish(t, S.FAILED, outcome, error=f"lost {t.lost} time(s) with its worker; last: {why}")
    else:
        core.life.ready(t, why)


def drain(core: Core, worker_ids: Iterable[WorkerId]) -> None:
    """Stop giving these workers tasks; each leaves once its running tasks are done."""
    for wid in worker_ids:
        w = core.workers.get(wid)
        if w is None or w.state == WorkerState.DRAINING:
            continue
        w.state = WorkerState.DRAINING
        core.left(wid)
        core.transactions.append(txformat.worker_draining(wid))
        # take back what it queued but has not started: someone else can run it now
        for tid in [t for t in w.tasks if core.tasks[t].state == S.DISPATCHED]:
            t = core.tasks[tid]
            release(core, t, kill=True)
            core.life.ready(t, f"worker {wid} draining")
        _release_if_drained(core, w)


def _release_if_drained(core: Core, w: WorkerEntry) -> None:
    if w.state == WorkerState.DRAINING and not w.tasks:
        core.out.append(SendDrain(w.id))


def update(core: Core, ev: WorkerUpdated) -> None:
    wid = ev.worker
    w = core.workers.get(wid)
    if w is None:
        return
    w.last_seen = core.now
    catalog = core.catalog
    dataplane.on_cached(core, catalog, w, list(ev.cached))
    dataplane.on_evicted(catalog, w, list(ev.evicted))
    dataplane.on_transfers(core, catalog, w, list(ev.transfers))
    tx = core.transactions
    for name in ev.cached:
        tx.append(txformat.cache(wid, "insert", name))
    for name in ev.evicted:
        tx.append(txformat.cache(wid, "evict", name))
    for ref in ev.started:
        t = core.tasks.get(ref.task_id)
        if t and t.worker == wid and t.attempt == ref.attempt and t.state == S.DISPATCHED:
            w.queued -= 1
            core.life.move(t, S.RUNNING, "started")
    acks = core.acks.setdefault(wid, [])
    for r in ev.results:
        acks.append(TaskRef(task_id=r.task_id, attempt=r.attempt))
        t = core.tasks.get(r.task_id)
        if t is None or t.worker != wid or t.attempt != r.attempt or t.state not in (S.DISPATCHED, S.RUNNING):
            tx.append(txformat.task_stale_result(r.task_id, r.attempt, wid))
            continue
        release(core, t, kill=False)
        attempt_ended(core, t, r, ev.frames, wid)
    if not w.tasks and w.idle_since is None:
        w.idle_since = core.now
    _release_if_drained(core, w)


def release(core: Core, t: TaskEntry, *, kill: bool) -> None:
    """Free the resources a task holds on its worker."""
    wid = t.worker
    w = core.workers.get(wid) if wid else None
    if w is None or wid is None:
        return
    if w.tasks.pop(t.spec.id, None) is not None:
        w.committed.remove(t.spec.resources)
        core.room.touch(w)
        if t.state == S.DISPATCHED:
            w.queued -= 1
        if t.spec.kind == TaskKind.CALL:
            w.calls -= 1
            inst = w.libs.get(t.spec.library or "")
            if inst is not None:
                inst.active -= 1
        if kill:
            core.out.append(SendKill(wid, [TaskRef(task_id=t.spec.id, attempt=t.attempt)]))
    if not w.tasks:
        w.idle_since = core.now


def attempt_ended(core: Core, t: TaskEntry, r: AttemptResult, frames: Sequence[bytes], wid: WorkerId) -> None:
    wall = r.wall_time
    if t.spec.kind == TaskKind.CALL:
        lib = core.libraries.get(t.spec.library or "")
        if lib is not None:
            lib.observe(wall)
    else:
        core.avg_wall = wall if core.avg_wall is None else 0.9 * core.avg_wall + 0.1 * wall
    out_frames: list[bytes] = []

    def take(i: int | None) -> int | None:
        if i is None or not 0 <= i < len(frames):
            return None
        out_frames.append(frames[i])
        return len(out_frames) - 1

    ok = r.outcome == Outcome.SUCCESS
    if not ok:
        t.failures += 1
    ran = txformat.attempt_ran(r.started, r.wall_time, r.exit_code)
    w = core.workers.get(wid)
    result = ClientResult(
        task_id=t.spec.id,
        state="done" if ok else "failed",
        attempts=t.attempt,
        outcome=r.outcome,
        exit_code=r.exit_code,
        output_frame=take(r.output_frame),
        output_spill=r.output_spill,
        error=r.error,
        wall_time=r.wall_time,
        worker=wid,
        host=w.info.host if w is not None else None,
        addrport=w.info.transfer_address if w is not None else None,
        outputs=[o if o.frame is None else replace(o, frame=take(o.frame)) for o in r.outputs],
    )
    life = core.life
    if w is not None and (r.outputs or r.output_spill is not None):
        dataplane.on_spilled(
            core, core.catalog, w, r
        )  # kept there for the client: a replica until undeclared
    if ok:
        if w is not None:
            dataplane.on_outputs(core, core.catalog, w, r.outputs)
        life.finish(t, S.DONE, r.outcome, result=result, frames=out_frames, ran=ran)
        return
    if r.outcome == Outcome.INPUT_MISSING:
        w = core.workers.get(wid)
        node = (w.info.cache_group or w.info.node) if w is not None else None
        for b in walk_bindings(t.spec.inputs):  # what an untar or minitask is made from too
            if b.cache_name is not None:
                core.catalog.done(wid, b.cache_name, node)
        forsaken = t.spec.max_forsaken
        if forsaken is not None:  # TaskVine: an input the worker could not get forsakes the attempt
            t.failures -= 1  # (not the task's failure: it counts towards max_forsaken instead)
            t.lost += 1
            if t.lost > forsaken:
                gave_up = replace(result, outcome=Outcome.FORSAKEN)
                life.finish(t, S.FAILED, Outcome.FORSAKEN, result=gave_up, frames=out_frames, ran=ran)
            else:
                life.retry(t, f"attempt {t.attempt} could not get its inputs: forsaken", ran)
            return
    if t.failures <= t.spec.retries:
        life.retry(t, f"attempt {t.attempt} {r.outcome.value}", ran)
    else:
        life.finish(t, S.FAILED, r.outcome, result=result, frames=out_frames, ran=ran)
