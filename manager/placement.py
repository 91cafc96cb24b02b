"""Where a ready task goes: packing tasks onto workers by their resources.

Tasks are placed highest priority first on the emptiest worker where they run at once
(the index of workers with room, :mod:`kubevine.manager.room`, finds it in O(log W)). To
keep a fast worker busy between round trips, a worker may also hold a few queued tasks beyond
what it runs at once (``prefetch``, only while recent tasks have been short); the worker starts
them only when its own resources allow, so a queued task never shares resources it does not
have. A task larger than every worker, or asking for features no worker has, is set aside as
unschedulable until one that can run it connects; an idle library instance gives its room up
to a task that needs it. A task goes only where it may: to a worker with its ``features``, and
— for inputs that must not travel (``strict``, TaskVine's fixed location, and temps while peer
transfers are off) — to a worker whose node holds them; a strict input that no connected
worker holds fails the task with ``fixed_location_missing``. A task whose ``time_start`` is
still to come is set aside until then (:mod:`kubevine.manager.timing`).

Pure, like :mod:`kubevine.manager.libraries` (which places function calls): functions of the
core's state, called by :class:`kubevine.manager.core.Core` when it schedules.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from kubevine.ids import TaskId, WorkerId
from kubevine.manager import affinity, dataplane, libraries, room, timing, workers
from kubevine.manager.states import WorkerState
from kubevine.protocol import TaskKind
from kubevine.resources import Resources
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import WorkerEntry

LOOK_AHEAD = 1000  # ready tasks the scheduler may look at and skip in one cycle

S = TaskState


def schedule_tasks(core: Core, workers: list[WorkerEntry]) -> None:
    """Place ready tasks (not calls) on ``workers``, highest priority first, until no worker
    has room, :data:`LOOK_AHEAD` tasks had to be skipped or the pass's budget of placements
    (``core.pass_left``) is spent. Which worker takes a task comes from ``core.room``, the
    index of workers with room: O(log W) per task, not a scan of every worker."""
    skipped: list[tuple[float, int, TaskId]] = []
    ready = core.ready
    index = core.room
    index.sync(core)
    biggest = core.biggest()
    peers: dict[WorkerId, tuple[str | None, str]] | None = None
    budget = LOOK_AHEAD
    evicted = False
    while ready and budget > 0:
        if core.pass_left <= 0:
            core.behind = True  # the rest next turn: the loop answers its peers meanwhile
            break
        if not index.any(core) and (
            evicted or not core.libraries or not any(libraries.idle_instances(core, w) for w in workers)
        ):
            break
        item = heapq.heappop(ready)
        t = core.tasks.get(item[2])
        if t is None or t.state != S.READY or timing.hold(core, t, item):
            continue
        need = t.spec.resources
        if not need.fits_in(biggest) and not any(need.fits_in(w.info.resources) for w in workers):
            affinity.set_aside(core, t)
            continue
        places = affinity.where(core, t, workers)
        if places is not None and not places:
            if not affinity.could_run(core, t):
                continue  # failed, or set aside until a worker that may run it connects
            skipped.append(item)
            budget -= 1
            continue
        if places is not None:
            chosen = _pick(core, need, places)
        else:
            found = index.pick(core, need)
            chosen = _pick(core, need, workers) if found is False else found
        if chosen is None and core.libraries and not evicted:
            # an idle library may be holding the room this task needs
            evicted = True
            chosen = libraries.evict_idle_libraries(core, need, workers)
        stages = None
        if chosen is not None and t.spec.inputs:
            peers = core.peers() if peers is None else peers
            stages = dataplane.stage_for(core, core.catalog, t, chosen, peers)
            if stages is None:
                chosen = None  # an input is on its way to where it will come from: wait
        if chosen is None:
            skipped.append(item)
            budget -= 1
            continue
        core.dispatch(t, chosen, stages)
    for item in skipped:
        heapq.heappush(ready, item)


def _pick(core: Core, need: Resources, workers: list[WorkerEntry]) -> WorkerEntry | None:
    """The same choice as :meth:`RoomIndex.pick`, by a scan of ``workers`` (a task that may go
    only to some of them, or one the index could not place among its first workers)."""
    best: WorkerEntry | None = None
    best_free = -1.0
    for w in workers:  # first: a worker where it runs at once, the emptiest one
        if w.state != WorkerState.CONNECTED:
            continue
        free_cores = w.info.resources.cores - w.committed.cores
        if free_cores > best_free and w.committed.room_for(need, w.info.resources):
            best, best_free = w, free_cores
    if best is not None or not core.prefetch:
        return best
    # then: queue it on a worker that can run it later, holding up to (1 + prefetch)
    # times its cores in tasks; the one with the most free cores first
    for w in workers:
        if w.state != WorkerState.CONNECTED or not room.may_queue(core, w, need):
            continue
        free_cores = w.info.resources.cores - w.committed.cores
        if best is None or free_cores > best_free:
            best, best_free = w, free_cores
    return best


def unqueue(core: Core) -> None:
    """Tasks queued on a worker behind what it runs while another worker has nothing to do are
    taken back (killed there before they start) and queued again, the first in line first, one
    per idle worker. Only while nothing is queued ahead on purpose (prefetch is off: recent tasks
    were long) and no ready task waits: a restarted manager otherwise left the tasks that an
    earlier one had queued behind a 600 s task waiting there while other workers idled. Called
    once a tick: O(W)."""
    if core.prefetch or core.ready:
        return
    live = core.live()
    spare = sum(1 for w in live if not w.tasks)
    if not spare:
        return
    for w in live:
        total = w.info.resources.cores
        if not w.queued or w.committed.cores <= total + room.EPS:
            continue
        queued = [t for tid in w.tasks if (t := core.tasks.get(tid)) is not None and t.state == S.DISPATCHED]
        queued.sort(key=lambda t: (-t.spec.priority, t.seq))
        for t in queued:
            if spare <= 0 or w.committed.cores <= total + room.EPS:
                break
            if t.spec.kind == TaskKind.CALL:
                continue  # calls hold library slots, not cores
            workers.release(core, t, kill=True)
            core.life.ready(t, f"queued on {w.id} behind running work while a worker idles")
            spare -= 1
        if spare <= 0:
            return
