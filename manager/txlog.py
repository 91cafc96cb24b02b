"""The transactions log: one line per event, so a run can be read, counted and plotted.

The core appends event lines (``TASK 17 running attempt=1 worker=w1 cause=started``, each
made by one of :mod:`kubevine.txformat`'s writers) to ``core.transactions`` as it changes
state; the service adds its own (manager events, files fetched for clients, performance
snapshots) and hands them here once per scheduling cycle. This writer stamps
each line with the time and the manager id and appends it to ``<workdir>/transactions.log``
(see :mod:`kubevine.txformat` for the grammar, ``docs/observability.md`` for the events).
In a cluster, where files in a pod are hard to reach, the same events can also go to
stdout, as JSON objects when logs are JSON.

Everything here runs in the manager's loop at thousands of tasks a second, so a cycle's
lines are joined and written in one call and the file is flushed at most five times a
second; the echo to stdout costs a parse per line and is off unless asked for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from kubevine import txformat
from kubevine.stats import ManagerStatus


class TxLog:
    def __init__(
        self,
        path: Path | None,
        manager_id: str,
        *,
        echo: TextIO | None = None,
        echo_json: bool = False,
    ) -> None:
        """Write to ``path`` (None: no file); also to ``echo`` (stdout, say), as JSON if asked."""
        self.path = path
        self.manager_id = manager_id
        self.echo = echo
        self.echo_json = echo_json
        self.lines_written = 0
        self._f: TextIO | None = None
        self._flushed = 0.0
        self._last_perf = ""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # the log names every file and task: for the manager's user only
            self._f = os.fdopen(fd, "a", buffering=1 << 16, encoding="utf-8")

    def write(self, lines: Iterable[str]) -> None:
        lines = list(lines) if not isinstance(lines, list) else lines
        if not lines or (self._f is None and self.echo is None):
            return
        stamp = f"{int(time.time() * 1e6)} {self.manager_id} "
        text = "".join(stamp + line + "\n" for line in lines)
        self.lines_written += len(lines)
        now = time.monotonic()
        flush = now - self._flushed > 0.2  # at most five flushes a second under load
        if self._f is not None:
            self._f.write(text)
            if flush:
                self._f.flush()
        if self.echo is not None:
            if self.echo_json:
                text = "".join(txformat.parse_line(stamp + line).to_json() + "\n" for line in lines)
            self.echo.write(text)
            if flush:
                self.echo.flush()
        if flush:
            self._flushed = now

    def perf(self, st: ManagerStatus) -> None:
        """Log a performance snapshot, unless nothing changed since the last one (an idle
        manager would otherwise write the same line every few seconds for days)."""
        line = txformat.manager_perf(st)
        if line != self._last_perf:
            self._last_perf = line
            self.write([line])

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()
        if self.echo is not None:
            self.echo.flush()

    def close(self) -> None:
        if self.echo is not None:
            self.echo.flush()
            self.echo = None
        if self._f is not None:
            self._f.close()
            self._f = None
