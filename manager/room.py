"""Which workers have room: an index, so placing a task costs O(log W), not a scan of W workers.

Placement asks two questions per task: does any worker still have room, and which one takes this
task — the one with the most free cores where it runs at once, else (while prefetching) the one
with the most free cores that may queue it. Scanning every worker for each task made a pass
O(tasks x workers): at 1,000 workers, 1.3 ms of manager CPU per task (docs/scale.md, section 1).

The index is a heap of ``(-free cores, seq, version, worker)``. Whatever changes a worker's room
(a dispatch, a release, a library installed or removed, a hello) calls :meth:`RoomIndex.touch`,
which pushes a fresh entry and makes the worker's older ones stale (their version is behind).
Entries are checked when they reach the top: a stale one, one of a worker gone, draining or
without room is dropped, one whose key no longer matches is pushed again with the right key. A
worker without room is out of the heap until something touches it again. As a safety net the
whole index is rebuilt from the workers on every tick (O(W) once a second) and whenever the
prefetch depth changes (that changes every worker's room at once). Pure, like placement.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Literal

from kubevine.ids import WorkerId
from kubevine.manager.states import WorkerState
from kubevine.resources import Resources

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import WorkerEntry

EPS = 1e-9
LOOK_DEEPER = 64  # workers looked at in heap order for one task before a full scan


class RoomIndex:
    """Workers that may take another task, the one with the most free cores first."""

    __slots__ = ("_seq", "heap", "prefetch", "version")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, WorkerId]] = []
        self.version: dict[WorkerId, int] = {}
        self.prefetch = -1  # the prefetch depth the heap was built for
        self._seq = itertools.count()

    def touch(self, w: WorkerEntry) -> None:
        """``w``'s room changed (or it is new): its entry is pushed again."""
        wid = w.info.worker_id
        v = self.version.get(wid, 0) + 1
        self.version[wid] = v
        free = w.info.resources.cores - w.committed.cores
        heapq.heappush(self.heap, (-free, next(self._seq), v, wid))

    def rebuild(self, core: Core) -> None:
        """Every connected worker with room, from scratch."""
        self.prefetch = core.prefetch
        self.version = {}
        entries = []
        for w in core.workers.values():
            if w.state == WorkerState.CONNECTED and has_room(core, w):
                wid = w.info.worker_id
                self.version[wid] = 0
                free = w.info.resources.cores - w.committed.cores
                entries.append((-free, next(self._seq), 0, wid))
        heapq.heapify(entries)
        self.heap = entries

    def sync(self, core: Core) -> None:
        """Before a pass: rebuilt if the prefetch depth changed or stale entries pile up."""
        if self.prefetch != core.prefetch or len(self.heap) > 4 * len(core.workers) + 64:
            self.rebuild(core)

    def _top(self, core: Core) -> WorkerEntry | None:
        """The valid entry on top (stale or roomless ones dropped on the way), left in place."""
        heap = self.heap
        while heap:
            key, _, v, wid = heap[0]
            w = core.workers.get(wid)
            if (
                w is None
                or self.version.get(wid) != v
                or w.state != WorkerState.CONNECTED
                or not has_room(core, w)
            ):
                heapq.heappop(heap)
                continue
            free = w.info.resources.cores - w.committed.cores
            if -free != key:  # changed without a touch: put back where it belongs
                heapq.heapreplace(heap, (-free, next(self._seq), v, wid))
                continue
            return w
        return None

    def any(self, core: Core) -> bool:
        """Whether some connected worker has room."""
        return self._top(core) is not None

    def pick(self, core: Core, need: Resources) -> WorkerEntry | Literal[False] | None:
        """The worker ``need`` goes to: the one with the most free cores where it runs at once,
        else (while prefetching) the one with the most free cores that may queue it; None if no
        worker can take it now; False when the answer is not among the first
        :data:`LOOK_DEEPER` workers (the caller scans them all)."""
        looked: list[tuple[float, int, int, WorkerId]] = []
        found: WorkerEntry | Literal[False] | None = None
        queue_on: WorkerEntry | None = None
        prefetch = core.prefetch
        try:
            while True:
                w = self._top(core)
                if w is None:
                    found = queue_on
                    return found
                free = w.info.resources.cores - w.committed.cores
                if free + EPS < need.cores:
                    # no worker left runs it at once (they have fewer free cores still)
                    found = queue_on if queue_on is not None or not prefetch else self._queue_on(core, need)
                    return found
                if w.committed.room_for(need, w.info.resources):
                    found = w
                    return found
                if prefetch and queue_on is None and may_queue(core, w, need):
                    queue_on = w
                if len(looked) >= LOOK_DEEPER:
                    found = False
                    return found
                looked.append(heapq.heappop(self.heap))
        finally:
            for entry in looked:
                heapq.heappush(self.heap, entry)

    def _queue_on(self, core: Core, need: Resources) -> WorkerEntry | Literal[False] | None:
        """The worker with the most free cores that may queue ``need`` (none runs it at once)."""
        looked: list[tuple[float, int, int, WorkerId]] = []
        try:
            while True:
                w = self._top(core)
                if w is None:
                    return None
                if may_queue(core, w, need):
                    return w
                if len(looked) >= LOOK_DEEPER:
                    return False
                looked.append(heapq.heappop(self.heap))
        finally:
            for entry in looked:
                heapq.heappush(self.heap, entry)


def max_tasks(core: Core, w: WorkerEntry) -> int:
    """Tasks (not calls) ``w`` may hold: its cores, and as many again per prefetch level."""
    return (1 + core.prefetch) * max(1, int(w.info.resources.cores))


def has_room(core: Core, w: WorkerEntry) -> bool:
    """Whether ``w`` may take another task now (to run, or queued while prefetching)."""
    total = w.info.resources.cores
    if w.committed.cores >= total * (1 + core.prefetch) - EPS:
        return False
    return len(w.tasks) - w.calls < max_tasks(core, w)


def may_queue(core: Core, w: WorkerEntry, need: Resources) -> bool:
    """Whether ``w`` may hold ``need`` queued behind what it runs: it fits the worker, not in the
    cores its library instances keep (a task queued behind an idle one would wait for ever),
    and within (1 + prefetch) times its cores and tasks."""
    total = w.info.resources
    lib_cores = sum(lib.spec.resources.cores for n in w.libs if (lib := core.libraries.get(n)))
    return (
        need.fits_in(total)
        and need.cores <= total.cores - lib_cores + EPS
        and w.committed.cores + need.cores <= total.cores * (1 + core.prefetch) + EPS
        and len(w.tasks) - w.calls < max_tasks(core, w)
    )
