"""The worker's own states, named once: a task it holds, a library instance, a file it makes.

The manager has its own view of each (``kubevine.states.TaskState``, library instances in
``kubevine.manager.libraries``); these are what the worker itself knows. They live in a module
of their own so that the pure core (:mod:`kubevine.worker.core`) and the process-facing modules
(:mod:`kubevine.worker.library`, :mod:`kubevine.worker.derive`) speak of them alike without the
core importing anything that starts processes or opens sockets.
"""

from __future__ import annotations

import enum


class SlotState(enum.StrEnum):
    """A task the worker holds, from its assignment until its result is taken.

    .. code-block:: text

        QUEUED  --inputs in the cache, its resources free-->  RUNNING (a process) | CALLING (a call)
        QUEUED  --killed-->                   gone, no result (its pins released)
        QUEUED  --an input cannot be had-->   gone, result INPUT_MISSING
        RUNNING --its process exits-->        gone, result reported
        RUNNING --killed-->                   dying: holds its resources and pins until it exits; no result
        CALLING --its library answers, or is gone-->  gone, result reported
        CALLING --killed-->                   gone; taken back from the library's queue, a late result dropped
    """

    QUEUED = "queued"  # waiting for its inputs, or for cores/memory/disk/gpus to be free here
    RUNNING = "running"  # its process was started (it may have been killed and not exited yet)
    CALLING = "calling"  # a function call handed to its library; ends with the call's result


class LibraryState(enum.StrEnum):
    """A library instance on this worker."""

    STARTING = "starting"  # its process is importing the functions; calls queue meanwhile
    READY = "ready"  # calls are sent to it
    FAILED = "failed"  # it failed to start (the manager is told, with its log)
    STOPPED = "stopped"  # stopped by the worker (removed, or the worker is leaving)


class DeriveState(enum.StrEnum):
    """A file this worker makes from other files (an unpacked archive, a minitask's product)."""

    WAITING = "waiting"  # for its parts to be in the cache
    SIBLING = "sibling"  # another worker of this node holds the lock and makes it: wait for its copy
    MAKING = "making"  # being made here, on a thread
