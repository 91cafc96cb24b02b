"""The manager's view of libraries: what is installed where, and where a call may go.

Pure bookkeeping used by :mod:`kubevine.manager.core`. A library is registered once by a
client; instances of it run on workers. A call may go to a worker whose instance is ready
and has a free slot. How many calls an instance may hold beyond its slots depends on how
short recent calls were: enough queued to cover a few milliseconds of work, so a busy
library never waits a round trip for its next call, and nothing queued ahead of long calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevine.ids import ClientId, TaskId
from kubevine.protocol import LibrarySpec

QUEUE_SECONDS = 0.005  # how much work (by recent call time) an instance may hold beyond its slots
MAX_AHEAD = 500  # calls an instance may hold beyond its slots, at most
BROKEN_AFTER = 2  # start-up failures (on any workers) after which a library is given up


@dataclass(slots=True)
class LibraryEntry:
    spec: LibrarySpec
    payload: bytes
    client: ClientId
    failures: int = 0
    failed_on: set[str] = field(default_factory=set)  # workers where it failed to start
    broken: str | None = None  # why it was given up
    avg_wall: float | None = None
    ready: list[tuple[float, int, TaskId]] = field(default_factory=list)  # calls waiting

    def observe(self, wall: float) -> None:
        self.avg_wall = wall if self.avg_wall is None else 0.9 * self.avg_wall + 0.1 * wall

    def capacity(self) -> int:
        """Calls one instance may hold at once (running + queued there)."""
        slots = self.spec.slots
        if self.avg_wall is None:
            return slots
        ahead = int(QUEUE_SECONDS * slots / max(self.avg_wall, 1e-6))
        return slots + min(MAX_AHEAD, ahead)


@dataclass(slots=True)
class Instance:
    """A library on one worker."""

    state: str  # installing | ready
    active: int = 0  # calls dispatched to it and not yet ended
