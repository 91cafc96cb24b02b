"""Task lifecycle as a table that drives the moves, and the one object that makes them.

:data:`TRANSITIONS` maps each legal ``(from, to)`` to a :class:`Move`: the reason such a move
happens (``docs/task-lifecycle.mmd`` draws the table; a test keeps the two equal) and the
effect of making it (queue the task, count a retry, deliver its result, ...). Every state
change in the manager goes through :meth:`Lifecycle.move`, which looks the move up, raises
:class:`IllegalTransition` for any other, and applies its effect: an illegal move is a bug
that fails at once instead of silently corrupting state. Each move is counted, written to the
transactions log and appended to the task's story with its cause, so ``story(task_id)``
replays a task's life.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappush
from typing import TYPE_CHECKING

from kubevine import txformat
from kubevine.ids import ClientId, TaskId
from kubevine.manager import dataplane
from kubevine.protocol import ClientResult, FileKind, Outcome, TaskKind
from kubevine.states import FINAL, TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import TaskEntry

__all__ = [
    "FINAL",
    "TRANSITIONS",
    "IllegalTransition",
    "Lifecycle",
    "Move",
    "TaskState",
    "WorkerState",
    "check_move",
]

S = TaskState


class WorkerState(enum.StrEnum):
    CONNECTED = "connected"
    DRAINING = "draining"  # takes no new tasks; leaves when idle
    RECOVERING = "recovering"  # known from before a manager restart; not back yet
    LOST = "lost"


class IllegalTransition(RuntimeError):
    """A move that the lifecycle does not allow: always a bug in kubevine."""


Results = list[tuple[ClientResult, list[bytes]]]

#: The states whose tasks count as waiting (the autoscaler's demand) and as running.
WAITING_STATES = frozenset({S.READY, S.WAITING, S.RETRYING})
RUNNING_STATES = frozenset({S.DISPATCHED, S.RUNNING})

Shape = tuple[float, int, int, int]  # cores, memory, disk, gpus


class Shapes:
    """How many tasks of each resource shape a group holds, kept as tasks move, so the
    status totals a group in O(shapes) instead of walking every task (3 s at 1M tasks)."""

    __slots__ = ("n", "shapes")

    def __init__(self) -> None:
        self.shapes: dict[Shape, int] = {}
        self.n = 0

    def add(self, t: TaskEntry, k: int) -> None:
        r = t.spec.resources
        key = (r.cores, r.memory, r.disk, r.gpus)
        left = self.shapes.get(key, 0) + k
        if left:
            self.shapes[key] = left
        else:
            del self.shapes[key]
        self.n += k

    def total(self) -> Shape:
        """The sum of the group's resources."""
        c = m = d = g = 0.0
        for (cores, memory, disk, gpus), n in self.shapes.items():
            c, m, d, g = c + cores * n, m + memory * n, d + disk * n, g + gpus * n
        return c, int(m), int(d), int(g)

    def largest(self) -> Shape:
        """The most of each resource one task of the group asks for."""
        if not self.shapes:
            return 0.0, 0, 0, 0
        keys = self.shapes.keys()
        return (
            max(k[0] for k in keys),
            max(k[1] for k in keys),
            max(k[2] for k in keys),
            max(k[3] for k in keys),
        )


class Lifecycle:
    """Moves tasks through :data:`TRANSITIONS`, and keeps what follows from the moves: tasks
    counted by state, totals since the start, the tasks changed this cycle (to be stored) and
    the results not yet handed to their clients.

    The data plane, library scheduling and recovery move tasks through this object's public
    methods; the core reads its counts and takes its changes once per cycle.
    """

    __slots__ = ("calls_ready", "core", "counts", "dirty", "running", "totals", "undelivered", "waiting")

    def __init__(self, core: Core) -> None:
        self.core = core
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self.totals = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0, "retried": 0}
        self.dirty: dict[TaskId, TaskEntry] = {}  # tasks whose record changed this cycle
        self.undelivered: dict[ClientId, Results] = {}  # results for clients, next take()
        self.waiting = Shapes()  # tasks in WAITING_STATES, by resource shape
        self.running = Shapes()  # tasks in RUNNING_STATES, by resource shape
        # ready calls by library: its queue also holds calls cancelled or failed while they
        # waited (a heap drops them lazily), which must not start instances
        self.calls_ready: dict[str, int] = {}

    def _group(self, state: TaskState) -> Shapes | None:
        if state in WAITING_STATES:
            return self.waiting
        if state in RUNNING_STATES:
            return self.running
        return None

    # ------------------------------------------------------------- entering and leaving

    def admit(self, t: TaskEntry) -> None:
        """A submitted task enters, waiting."""
        spec = t.spec
        self.core.transactions.append(
            txformat.task_submitted(spec.id, spec.kind, spec.resources, spec.category, spec.library, spec.tag)
        )
        self.counts[S.WAITING] += 1
        self.waiting.add(t, 1)
        self.totals["submitted"] += 1

    def restored(self, t: TaskEntry) -> None:
        """A task reloaded from the store enters in the state it was stored in."""
        self.counts[t.state] += 1
        group = self._group(t.state)
        if group is not None:
            group.add(t, 1)
        if t.state == S.READY and t.spec.kind == TaskKind.CALL:
            self._call_ready(t, 1)

    def forget(self, t: TaskEntry) -> None:
        """A finished task whose result its client has leaves for good."""
        tid = t.spec.id
        del self.core.tasks[tid]
        if self.core.restoring is not None:  # its slice, still to come, must not bring it back
            self.core.restoring.forgotten.add(tid)
        self.counts[t.state] -= 1
        group = self._group(t.state)
        if group is not None:
            group.add(t, -1)
        self.dirty.pop(tid, None)
        batch = self.core.batch
        batch.deleted.add(tid)
        batch.records.pop(tid, None)
        batch.results.pop(tid, None)
        batch.specs.pop(tid, None)

    # ------------------------------------------------------------- moves

    def move(self, t: TaskEntry, to: TaskState, cause: str = "", ran: str = "") -> None:
        """Move ``t`` to ``to`` because of ``cause`` (the table's reason if empty); ``ran`` is
        what the log line says about an attempt that ended (:func:`txformat.attempt_ran`)."""
        m = TRANSITIONS.get((t.state, to))
        if m is None:
            raise IllegalTransition(f"task cannot move from {t.state.value} to {to.value}")
        m.effect(self, t, to, cause or m.reason, ran)

    def ready(self, t: TaskEntry, cause: str) -> None:
        """Queue ``t`` to run; a call whose library was removed meanwhile fails instead."""
        if t.spec.kind == TaskKind.CALL and (t.spec.library or "") not in self.core.libraries:
            self.finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=f"library {t.spec.library!r} was removed")
            return
        self.move(t, S.READY, cause)

    def retry(self, t: TaskEntry, cause: str, ran: str) -> None:
        """An attempt failed and the task may try again: retrying, then ready."""
        self.move(t, S.RETRYING, cause, ran)
        self.ready(t, "retry")

    def finish(
        self,
        t: TaskEntry,
        to: TaskState,
        outcome: Outcome,
        *,
        result: ClientResult | None = None,
        frames: list[bytes] | None = None,
        error: str | None = None,
        ran: str = "",
    ) -> None:
        """End ``t`` in a final state with its client's result (made from ``outcome`` and
        ``error`` when the task did not run to an end)."""
        state = to.value
        if result is None:
            result = ClientResult(
                task_id=t.spec.id, state=state, attempts=t.attempt, outcome=outcome, error=error
            )
        elif result.state != state:
            result = result.model_copy(update={"state": state})
        t.result, t.frames = result, frames or []
        if not any(b.kind == FileKind.TEMP for b in t.spec.outputs):
            t.payload = None  # a temp's producer keeps it: it may have to run again
        self.move(t, to, outcome.value, ran)

    def story(self, task_id: TaskId) -> list[tuple[float, str, str]]:
        """Every state a task went through, with when and why."""
        t = self.core.tasks.get(task_id)
        return list(t.story) if t else []

    # ------------------------------------------------------------- effects (the table's)

    def _enter(self, t: TaskEntry, to: TaskState, cause: str, ran: str) -> None:
        """Every move: count it, record it, log it."""
        counts = self.counts
        counts[t.state] -= 1
        counts[to] += 1
        before, after = self._group(t.state), self._group(to)
        if before is not after:
            if before is not None:
                before.add(t, -1)
            if after is not None:
                after.add(t, 1)
        if t.spec.kind == TaskKind.CALL and (t.state == S.READY or to == S.READY):
            self._call_ready(t, 1 if to == S.READY else -1)
        t.state = to
        t.story.append((self.core.now, to.value, cause))
        self.dirty[t.spec.id] = t
        self.core.transactions.append(txformat.task_moved(t.spec.id, to, t.attempt, t.worker, cause, ran))

    def _call_ready(self, t: TaskEntry, n: int) -> None:
        name = t.spec.library or ""
        self.calls_ready[name] = self.calls_ready.get(name, 0) + n

    def _queue(self, t: TaskEntry, to: TaskState, cause: str, ran: str) -> None:
        """Ready: off its worker, into its queue (a call's library's, or the tasks')."""
        t.worker = None
        self._enter(t, to, cause, ran)
        item = (-t.spec.priority, t.seq, t.spec.id)
        lib = self.core.libraries.get(t.spec.library or "") if t.spec.kind == TaskKind.CALL else None
        heappush(lib.ready if lib is not None else self.core.ready, item)

    def _rerun(self, t: TaskEntry, to: TaskState, cause: str, ran: str) -> None:
        """A done task runs again to remake a lost temp file: its client has its result."""
        t.rerun = True
        t.result = None
        self._queue(t, to, cause, ran)

    def _retrying(self, t: TaskEntry, to: TaskState, cause: str, ran: str) -> None:
        self.totals["retried"] += 1
        t.worker = None
        self._enter(t, to, cause, ran)

    def _end(self, t: TaskEntry, to: TaskState, cause: str, ran: str) -> None:
        """Final: what waited for its outputs learns it never comes; its client gets the
        result (unless this was a rerun, whose result the client has)."""
        self._enter(t, to, cause, ran)
        if to != S.DONE:
            dataplane.producer_ended(self.core, t)
        if t.rerun:
            t.rerun = False
            return
        result = t.result
        assert result is not None  # set by finish()
        self.totals[to.value] += 1
        self.core.batch.results[t.spec.id] = (result, t.frames)
        self.undelivered.setdefault(t.client, []).append((result, t.frames))


Effect = Callable[[Lifecycle, "TaskEntry", TaskState, str, str], None]


@dataclass(frozen=True, slots=True)
class Move:
    """A legal move: why it happens, and what making it does."""

    reason: str
    effect: Effect


_enter, _queue, _rerun, _retrying, _end = (
    Lifecycle._enter,
    Lifecycle._queue,
    Lifecycle._rerun,
    Lifecycle._retrying,
    Lifecycle._end,
)

#: (from, to) -> why such a move happens, and its effect.
TRANSITIONS: dict[tuple[TaskState, TaskState], Move] = {
    (S.WAITING, S.READY): Move("all inputs exist", _queue),
    (S.WAITING, S.FAILED): Move("an input can never be produced", _end),
    (S.WAITING, S.CANCELLED): Move("cancelled by the client", _end),
    (S.READY, S.DISPATCHED): Move("placed on a worker with room", _enter),
    (S.READY, S.WAITING): Move("an input's only replica was lost", _enter),
    (S.READY, S.FAILED): Move("cannot run (unknown library, unschedulable and told to give up)", _end),
    (S.READY, S.CANCELLED): Move("cancelled by the client", _end),
    (S.DISPATCHED, S.RUNNING): Move("the worker started it", _enter),
    (S.DISPATCHED, S.READY): Move("its worker was lost or drained before it started", _queue),
    (S.DISPATCHED, S.DONE): Move("finished (start and end reported together)", _end),
    (S.DISPATCHED, S.RETRYING): Move("attempt failed before or as it started", _retrying),
    (S.DISPATCHED, S.FAILED): Move("attempt failed and no retries are left", _end),
    (S.DISPATCHED, S.CANCELLED): Move("cancelled by the client", _end),
    (S.RUNNING, S.DONE): Move("finished successfully", _end),
    (S.RUNNING, S.RETRYING): Move("attempt failed; retries left", _retrying),
    (S.RUNNING, S.FAILED): Move("attempt failed and no retries are left", _end),
    (S.RUNNING, S.READY): Move("its worker was lost while running it", _queue),
    (S.RUNNING, S.CANCELLED): Move("cancelled by the client", _end),
    (S.RETRYING, S.READY): Move("requeued for another attempt", _queue),
    (S.DONE, S.READY): Move("a temp file it produced was lost and is needed again", _rerun),
    (S.RETRYING, S.CANCELLED): Move("cancelled by the client", _end),
}


def check_move(frm: TaskState, to: TaskState) -> str:
    """The reason for a legal move; :class:`IllegalTransition` for any other."""
    try:
        return TRANSITIONS[(frm, to)].reason
    except KeyError:
        raise IllegalTransition(f"task cannot move from {frm.value} to {to.value}") from None
