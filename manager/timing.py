"""When a task may run: TaskVine's ``set_time_start`` and ``set_time_end``.

A task with ``time_start`` is not dispatched before it: placement sets it aside in a heap
ordered by that time (it stays ready, and costs nothing while it waits) and it goes back to
its queue when the time comes. A task with ``time_end`` that has not started by then fails
with ``max_end_time``; one that is on a worker is the worker's to stop at that time (it
reports ``max_end_time`` itself), and should a worker not do so, the manager stops it and
fails it a heartbeat timeout later. Pure functions of the core's state, like placement.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from kubevine.ids import TaskId
from kubevine.manager.instructions import SendKill
from kubevine.protocol import Outcome, TaskKind, TaskRef
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import TaskEntry

S = TaskState
Item = tuple[float, int, TaskId]  # a queue entry: (-priority, seq, task id)


def admit(core: Core, t: TaskEntry) -> bool:
    """A task was submitted: watch its end time; False if that is already past (it failed)."""
    end = t.spec.time_end
    if end is None:
        return True
    if end <= core.now:
        core.life.finish(t, S.FAILED, Outcome.MAX_END_TIME, error=_never_started(t))
        return False
    heapq.heappush(core.ends, (end, t.seq, t.spec.id))
    return True


def expire(core: Core) -> None:
    """Fail the tasks whose end time came before they started (called on each tick)."""
    ends, now = core.ends, core.now
    while ends and ends[0][0] <= now:
        end, seq, tid = heapq.heappop(ends)
        t = core.tasks.get(tid)
        if t is None or t.state in (S.DONE, S.FAILED, S.CANCELLED):
            continue
        if t.state in (S.DISPATCHED, S.RUNNING):
            grace = (t.spec.time_end or end) + core.settings.heartbeat_timeout
            if end < grace:  # the worker stops it; look again once it should have said so
                heapq.heappush(ends, (grace, seq, tid))
                continue
            from kubevine.manager import workers  # here: workers -> libraries -> timing

            wid = t.worker
            workers.release(core, t, kill=False)
            if wid is not None:
                core.out.append(SendKill(wid, [TaskRef(task_id=tid, attempt=t.attempt)]))
            error = f"still running {now - (t.spec.time_end or end):.0f}s after its end time"
            core.life.finish(t, S.FAILED, Outcome.MAX_END_TIME, error=error)
            continue
        core.life.finish(t, S.FAILED, Outcome.MAX_END_TIME, error=_never_started(t))


def hold(core: Core, t: TaskEntry, item: Item) -> bool:
    """Placement popped ``t``: set it aside until its start time if that is still to come."""
    start = t.spec.time_start
    if start is None or start <= core.now:
        return False
    heapq.heappush(core.not_before, (start, item[1], t.spec.id))
    return True


def release(core: Core) -> None:
    """Tasks whose start time has come go back to their queues (called before scheduling)."""
    held, now = core.not_before, core.now
    while held and held[0][0] <= now:
        _, seq, tid = heapq.heappop(held)
        t = core.tasks.get(tid)
        if t is None or t.state != S.READY:
            continue
        item = (-t.spec.priority, seq, tid)
        lib = core.libraries.get(t.spec.library or "") if t.spec.kind == TaskKind.CALL else None
        heapq.heappush(lib.ready if lib is not None else core.ready, item)


def _never_started(t: TaskEntry) -> str:
    return f"its end time ({t.spec.time_end:.0f}, epoch seconds) came before it started"
