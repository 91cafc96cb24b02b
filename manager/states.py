"""Task lifecycle as a table: which moves are legal, and why each one happens.

Every state change in the manager goes through :func:`check_move`, so an illegal move is a
bug that raises at once instead of silently corrupting state. The table doubles as the
documentation of the lifecycle; ``docs/task-lifecycle.mmd`` draws it.
"""

from __future__ import annotations

import enum

from kubevine.states import FINAL, TaskState

__all__ = ["FINAL", "TRANSITIONS", "IllegalTransition", "TaskState", "WorkerState", "check_move"]


S = TaskState
#: (from, to) -> the reason such a move happens.
TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (S.WAITING, S.READY): "all inputs exist",
    (S.WAITING, S.FAILED): "an input can never be produced",
    (S.WAITING, S.CANCELLED): "cancelled by the client",
    (S.READY, S.DISPATCHED): "placed on a worker with room",
    (S.READY, S.WAITING): "an input's only replica was lost",
    (S.READY, S.FAILED): "cannot run (unknown library, unschedulable and told to give up)",
    (S.READY, S.CANCELLED): "cancelled by the client",
    (S.DISPATCHED, S.RUNNING): "the worker started it",
    (S.DISPATCHED, S.READY): "its worker was lost or drained before it started",
    (S.DISPATCHED, S.DONE): "finished (start and end reported together)",
    (S.DISPATCHED, S.RETRYING): "attempt failed before or as it started",
    (S.DISPATCHED, S.FAILED): "attempt failed and no retries are left",
    (S.DISPATCHED, S.CANCELLED): "cancelled by the client",
    (S.RUNNING, S.DONE): "finished successfully",
    (S.RUNNING, S.RETRYING): "attempt failed; retries left",
    (S.RUNNING, S.FAILED): "attempt failed and no retries are left",
    (S.RUNNING, S.READY): "its worker was lost while running it",
    (S.RUNNING, S.CANCELLED): "cancelled by the client",
    (S.RETRYING, S.READY): "requeued for another attempt",
    (S.DONE, S.READY): "a temp file it produced was lost and is needed again",
    (S.RETRYING, S.CANCELLED): "cancelled by the client",
}


class IllegalTransition(RuntimeError):
    """A move that the lifecycle does not allow: always a bug in kubevine."""


def check_move(frm: TaskState, to: TaskState) -> str:
    """The reason for a legal move; :class:`IllegalTransition` for any other."""
    try:
        return TRANSITIONS[(frm, to)]
    except KeyError:
        raise IllegalTransition(f"task cannot move from {frm.value} to {to.value}") from None


class WorkerState(enum.StrEnum):
    CONNECTED = "connected"
    DRAINING = "draining"  # takes no new tasks; leaves when idle
    RECOVERING = "recovering"  # known from before a manager restart; not back yet
    LOST = "lost"
