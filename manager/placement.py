"""Where a ready task goes: packing tasks onto workers by their resources.

Tasks are placed highest priority first on the emptiest worker where they run at once. To
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

from kubevine.ids import TaskId
from kubevine.manager import affinity, dataplane, libraries, timing
from kubevine.resources import Resources
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import WorkerEntry

LOOK_AHEAD = 1000  # ready tasks the scheduler may look at and skip in one cycle

S = TaskState


def schedule_tasks(core: Core, workers: list[WorkerEntry]) -> None:
    """Place ready tasks (not calls) on ``workers``, highest priority first, until no worker
    has room or :data:`LOOK_AHEAD` tasks had to be skipped."""
    skipped: list[tuple[float, int, TaskId]] = []
    ready = core.ready
    sizes = [w.info.resources for w in workers]
    peers = core.peers()
    biggest = Resources.model_construct(
        cores=max(r.cores for r in sizes),
        memory=max(r.memory for r in sizes),
        disk=max(r.disk for r in sizes),
        gpus=max(r.gpus for r in sizes),
    )
    budget = LOOK_AHEAD
    evicted = False
    while ready and budget > 0:
        if not any(_has_room(core, w) for w in workers) and (
            evicted or not any(libraries.idle_instances(core, w) for w in workers)
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
        chosen = _pick(core, need, places if places is not None else workers)
        if chosen is None and core.libraries and not evicted:
            # an idle library may be holding the room this task needs
            evicted = True
            chosen = libraries.evict_idle_libraries(core, need, workers)
        stages = None
        if chosen is not None and t.spec.inputs:
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


def _has_room(core: Core, w: WorkerEntry) -> bool:
    total = w.info.resources.cores
    return w.committed.cores < total * (1 + core.prefetch) - 1e-9 and len(w.tasks) - w.calls < _max_tasks(
        core, w
    )


def _max_tasks(core: Core, w: WorkerEntry) -> int:
    return (1 + core.prefetch) * max(1, int(w.info.resources.cores))


def _pick(core: Core, need: Resources, workers: list[WorkerEntry]) -> WorkerEntry | None:
    best: WorkerEntry | None = None
    best_free = -1.0
    for w in workers:  # first: a worker where it runs at once, the emptiest one
        free_cores = w.info.resources.cores - w.committed.cores
        if free_cores > best_free and w.committed.room_for(need, w.info.resources):
            best, best_free = w, free_cores
    prefetch = core.prefetch
    if best is not None or not prefetch:
        return best
    # then: queue it on a worker that can run it later, holding up to (1 + prefetch)
    # times its cores in tasks; the least loaded first
    load = 0.0
    for w in workers:
        total = w.info.resources
        # library instances keep their cores: a task queued behind an idle one would
        # wait for ever (it is evicted only when no worker can take the task)
        lib_cores = sum(lib.spec.resources.cores for n in w.libs if (lib := core.libraries.get(n)))
        if (
            need.fits_in(total)
            and need.cores <= total.cores - lib_cores + 1e-9
            and w.committed.cores + need.cores <= total.cores * (1 + prefetch) + 1e-9
            and len(w.tasks) - w.calls < _max_tasks(core, w)
        ):
            mine = w.committed.cores / max(total.cores, 1e-9)
            if best is None or mine < load:
                best, load = w, mine
    return best
