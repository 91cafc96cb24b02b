"""The transactions log: one line per event, so a run can be read, counted and plotted.

Format (one event a line, space separated)::

    <unix time, µs> <manager id> <KIND> <subject> <fields...>

KIND is TASK, WORKER, FILE or MANAGER; fields are ``key=value``. Lines are buffered and
written once per scheduling cycle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO


class TxLog:
    def __init__(self, path: Path | None, manager_id: str) -> None:
        self.path = path
        self.manager_id = manager_id
        self._f: TextIO | None = None
        self._flushed = 0.0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = path.open("a", buffering=1 << 16)

    def write(self, lines: list[str]) -> None:
        if self._f is None or not lines:
            return
        stamp = f"{int(time.time() * 1e6)} {self.manager_id} "
        self._f.write("".join(stamp + line + "\n" for line in lines))
        now = time.monotonic()
        if now - self._flushed > 0.2:  # at most five flushes a second under load
            self._f.flush()
            self._flushed = now

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
