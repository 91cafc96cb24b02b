"""The grammar of a transactions-log line, shared by the manager (writer) and readers.

The manager writes one line per event to ``<workdir>/transactions.log`` (see
``docs/observability.md`` for every event). Writing must cost next to nothing per task, so
lines are plain text built with f-strings; reading must be unambiguous, so every line
follows one grammar::

    <time µs> <manager id> <KIND> <subject> <event> key=value key=value ...

Values containing a space, a double quote or an ``=`` are written as JSON strings
(``cause="worker w1 silent for 31.0s"``); ``-`` stands for "none". This module holds the
quoting used by the writer and the parser used by ``kubevine report``, the JSON-lines
echo and the tests, so the two sides cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevine.resources import Resources
from kubevine.states import TaskState

KINDS = ("MANAGER", "WORKER", "TASK", "TRANSFER", "CACHE", "LIBRARY")
#: the events of TASK lines that are states (the manager's task lifecycle, in order)
TASK_STATES = tuple(s.value for s in TaskState)
#: where a file can come from (TRANSFER ``source=``), cheapest first
SOURCES = ("peer", "manager", "url")

#: fields whose values are names, kept as strings in JSON even when they look like numbers
NAMES = frozenset(
    {"tag", "category", "library", "function", "worker", "node", "host", "file", "source"}
    | {"dest", "peer", "cause", "workflow", "manager", "type", "outcome", "pod"}
)

_FIELD = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_NEEDS_QUOTES = re.compile(r'[\s"=]')


def q(value: object) -> str:
    """A value as it appears after ``key=``: bare when safe, else a JSON string."""
    if value is None:
        return "-"
    s = str(value)
    if not s:
        return '""'
    if _NEEDS_QUOTES.search(s) is None:
        return s
    return json.dumps(s)


def resources(r: Resources) -> str:
    """``cores=… memory=… disk=… gpus=…``, the resource fields of TASK and WORKER lines."""
    return f"cores={r.cores:g} memory={r.memory} disk={r.disk} gpus={r.gpus}"


@dataclass(slots=True)
class Event:
    """One parsed line."""

    time: float  # unix seconds
    manager: str
    kind: str
    subject: str
    event: str
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        v = self.fields.get(key)
        return default if v is None or v == "-" else v

    def num(self, key: str, default: float = 0.0) -> float:
        v = self.fields.get(key)
        if v is None or v == "-":
            return default
        try:
            return float(v)
        except ValueError:
            return default

    def to_json(self) -> str:
        """The event as one JSON object (the ``--transactions-stdout`` form under JSON logs)."""
        out: dict[str, Any] = {
            "time": self.time,
            "manager": self.manager,
            "kind": self.kind,
            "subject": self.subject,
            "event": self.event,
        }
        for k, v in self.fields.items():
            key = k if k not in out else f"field_{k}"  # never shadow the line's own parts
            out[key] = v if k in NAMES else _typed(v)
        return json.dumps(out, separators=(",", ":"))


class LineError(ValueError):
    """A line that does not follow the grammar."""


def parse_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _FIELD.finditer(text):
        v = m.group(2)
        if v.startswith('"'):
            v = json.loads(v)
        out[m.group(1)] = v
    return out


def parse_line(line: str) -> Event:
    """One line → :class:`Event`; :class:`LineError` for anything else."""
    parts = line.rstrip("\n").split(" ", 5)
    if len(parts) < 5:
        raise LineError(f"too few parts: {line[:80]!r}")
    stamp, manager, kind, subject, event = parts[:5]
    try:
        t = int(stamp) / 1e6
    except ValueError:
        raise LineError(f"bad time stamp {stamp!r}") from None
    if kind not in KINDS:
        raise LineError(f"unknown kind {kind!r}")
    return Event(t, manager, kind, subject, event, parse_fields(parts[5]) if len(parts) == 6 else {})


def parse_lines(lines: Iterable[str], *, strict: bool = False) -> Iterator[Event]:
    """Events of many lines; malformed lines (a torn last line, say) are skipped unless ``strict``."""
    for line in lines:
        if not line.strip():
            continue
        try:
            yield parse_line(line)
        except (LineError, json.JSONDecodeError):
            if strict:
                raise


def read(path: str | Path, *, strict: bool = False) -> list[Event]:
    """Every event of a transactions log."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return list(parse_lines(f, strict=strict))


def _typed(v: str) -> Any:
    if v == "-":
        return None
    if v in ("true", "false"):
        return v == "true"
    if v[:1].isdigit() or (v[:1] == "-" and v[1:2].isdigit()):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v
    return v
