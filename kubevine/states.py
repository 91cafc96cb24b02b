"""Task states, named once for every part that speaks of them.

The manager moves a task through :class:`TaskState` (its transition table, with a reason per
move, is :mod:`kubevine.manager.states`); the transactions log writes those names, reports
and the operator count them, and the client sees the final ones. A user's ``Task`` object has
its own few states before the manager has a say (:class:`ClientState`). Writing the names out
anywhere else is how they drift apart.
"""

from __future__ import annotations

import enum


class TaskState(enum.StrEnum):
    """A task's state in the manager (and in ``TASK`` lines of the transactions log)."""

    WAITING = "waiting"  # an input is not available yet (a temp file still to be produced)
    READY = "ready"  # can run as soon as a worker has room
    DISPATCHED = "dispatched"  # sent to a worker, not started yet
    RUNNING = "running"  # the worker started it
    RETRYING = "retrying"  # an attempt failed and the retry budget allows another
    DONE = "done"  # ran, exit 0, outputs present
    FAILED = "failed"  # gave up: ran unsuccessfully with no retries left, or could not run
    CANCELLED = "cancelled"  # the client cancelled it


#: The states a task ends in, as far as its client is concerned. (DONE is final for the
#: client; the manager may still re-run a task to regenerate a lost temp file that another
#: task needs, and its result is not delivered again.)
FINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})


class ClientState(enum.StrEnum):
    """A ``Task`` object's state in user code (``t.state``)."""

    NEW = "new"  # built, not submitted
    SUBMITTED = "submitted"  # handed to the manager; not finished
    REFUSED = "refused"  # the manager could not accept it (its store was unavailable)
    DONE = TaskState.DONE.value
    FAILED = TaskState.FAILED.value
    CANCELLED = TaskState.CANCELLED.value

    @property
    def final(self) -> bool:
        """The task has its result (or was refused) and may be submitted again."""
        return self in (ClientState.DONE, ClientState.FAILED, ClientState.CANCELLED, ClientState.REFUSED)
