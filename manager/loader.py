"""A large store's tasks read a slice per loop turn, while the restarted manager serves.

Loading a task costs ~15-20 µs of CPU in Python (reading it, validating its spec, putting it
back on its way): a million tasks are half a minute, and a restarted manager must not make
its workers wait that long for their first dispatch. So the service loads everything but the
tasks before it serves (:mod:`kubevine.manager.recovery`'s ``begin``), then, in each turn of
its loop, one slice of about :data:`SLICE_SECONDS` from a scan of the stored tasks, and the
tasks a worker names (in its hello or its results) at once, before the core reads that
message. The core is told of each slice (``TasksRestored``) and of the end (``RestoreDone``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kubevine.ids import TaskId
from kubevine.manager import events
from kubevine.manager.store import StateStore, StoreError

if TYPE_CHECKING:
    from kubevine.manager.core import Core

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.015  # a slice's reading and loading, aimed at (the loop turn's budget)
RETRY_SECONDS = 1.0  # after the store failed a read: the loop goes on serving meanwhile
FIRST_SLICE = 500  # tasks asked for in the first slice; later ones are sized by the time taken
MAX_SLICE = 20_000


class NotLoadedYet(Exception):
    """The tasks a worker's message names cannot be read from the store now: the message waits
    (a hello is left unanswered, so the worker says it again after its back-off)."""


class Loader:
    """The stored tasks still to read, and reading them."""

    def __init__(
        self,
        store: StateStore,
        core: Core,
        head_counts: tuple[int, int, int, int],
        stored: int,
        started: float,
    ) -> None:
        self.store = store
        self.head_counts = head_counts  # workers, libraries, files, replicas loaded before serving
        self.core = core
        self.stored = stored  # tasks in the store when the load began
        self.started = started  # time.monotonic() when the manager began to read the store
        self.cursor = 0
        self.size = FIRST_SLICE
        self.slices = 0
        self.named = 0  # tasks loaded ahead of their slice, because a worker named them
        self.retry_at = 0.0  # after a failed read: when to read again
        try:  # a store restarted meanwhile voids the cursor
            self.incarnation = store.incarnation()
        except StoreError:
            self.incarnation = "?"  # checked again before the first read after a failure

    def due(self) -> bool:
        """Whether a slice may be read now (not while waiting after a failed read)."""
        return time.monotonic() >= self.retry_at

    def step(self) -> bool:
        """Read and hand over the next slice; whether that was the last."""
        t0 = time.monotonic()
        if t0 < self.retry_at:
            return False
        try:
            if self.retry_at:  # after a failure: a store that restarted orders its tasks anew
                self._check_incarnation()
            cursor, part = self.store.scan_tasks(self.cursor, self.size)
        except StoreError as e:  # tried again in a while; what was read stays loaded
            if not self.retry_at:
                log.warning(
                    "loading tasks from the store paused (%s); trying again every %.0fs", e, RETRY_SECONDS
                )
            self.retry_at = t0 + RETRY_SECONDS
            return False
        if self.retry_at:
            log.info("loading tasks from the store again (%s)", self.progress())
            self.retry_at = 0.0
        self.core.handle(events.TasksRestored(part))
        self.cursor = cursor
        self.slices += 1
        spent = max(time.monotonic() - t0, 1e-4)
        # the next slice aims at SLICE_SECONDS, moving at most 2x from this one
        aim = self.size * SLICE_SECONDS / spent
        self.size = int(min(MAX_SLICE, max(100, self.size / 2, min(self.size * 2, aim))))
        return cursor == 0

    def _check_incarnation(self) -> None:
        now = self.store.incarnation()
        if now != self.incarnation or not now:  # a scan's cursor means nothing to another
            # incarnation (and one that cannot be told is taken for another: tasks read twice
            # are skipped, tasks missed would be lost)
            if self.cursor:
                log.warning("the store may have restarted while its tasks were loading: reading them again")
            self.incarnation, self.cursor = now, 0

    def named_tasks(self, ids: Iterable[TaskId]) -> bool:
        """Load now the tasks a worker's message names that are not loaded yet, so the core
        reads it knowing them (a hello's held tasks are not killed as unknown, a result is not
        dropped). False when they cannot be read now (the store fails): the message must wait."""
        r = self.core.restoring
        if r is None:
            return True
        tasks = self.core.tasks
        missing = [i for i in ids if i not in tasks and i not in r.forgotten]
        if not missing:
            return True
        if not self.due():  # the store failed a moment ago: a hello must not wait on it
            return False
        try:
            part = self.store.load_tasks(missing)
        except StoreError as e:
            log.warning("could not load %d task(s) a worker named from the store: %s", len(missing), e)
            self.retry_at = time.monotonic() + RETRY_SECONDS
            return False
        self.named += len(part.specs)
        self.core.handle(events.TasksRestored(part))
        return True

    def left(self) -> int:
        """About how many stored tasks are still to load (at least 1 until the end)."""
        r = self.core.restoring
        return max(1, self.stored - (r.loaded if r is not None else self.stored))

    def progress(self) -> str:
        return f"about {self.left():,} of {self.stored:,} task(s) still to load"
