"""The grammar of a transactions-log line, shared by the manager (writer) and readers.

The manager writes one line per event to ``<workdir>/transactions.log`` (see
``docs/observability.md`` for every event). Writing must cost next to nothing per task, so
lines are plain text built with f-strings; reading must be unambiguous, so every line
follows one grammar::

    <time µs> <manager id> <KIND> <subject> <event> key=value key=value ...

Values containing a space, a double quote or an ``=`` are written as JSON strings
(``cause="worker w1 silent for 31.0s"``); ``-`` stands for "none". This module holds the
quoting and one writer per line kind (``task_moved``, ``cache``, ``worker_connected``, ...)
next to the parser used by ``kubevine report``, the JSON-lines echo and the tests, so the two
sides cannot drift apart: nothing else spells a line out (a test scans the manager for it).
The writers are plain f-strings, called thousands of times a second.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kubevine.resources import Resources
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.stats import ManagerStatus

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


# the same few causes, libraries, categories and tags repeat on every task's lines: quote each once
_qc = functools.lru_cache(maxsize=4096)(q)

# ------------------------------------------------------------------ writers
# One function per line kind, each returning the line without its time stamp and manager id
# (the log adds those). docs/observability.md lists them; tests/unit/test_txformat_writers.py
# parses every one back.


def task_submitted(
    task: int, kind: str, r: Resources, category: str | None, library: str | None, tag: str | None
) -> str:
    """``TASK <t> waiting type=… cores=… category=… library=… tag=…``: a task was submitted."""
    return (
        f"TASK {task} waiting type={kind} cores={r.cores:g} memory={r.memory} disk={r.disk} gpus={r.gpus}"
        f" category={_qc(category)} library={_qc(library)} tag={_qc(tag)}"
    )


def task_moved(task: int, state: str, attempt: int, worker: str | None, cause: str, ran: str = "") -> str:
    """``TASK <t> <state> attempt=A worker=W cause=C``: a state change; ``ran`` is
    :func:`attempt_ran` on the moves that end an attempt."""
    return f"TASK {task} {state} attempt={attempt} worker={worker or '-'} cause={_qc(cause)}{ran}"


def attempt_ran(started: float, wall: float, exit_code: int | None) -> str:
    """`` started=S wall=W exit=X``: what :func:`task_moved` adds when an attempt ended."""
    return f" started={started:.6f} wall={wall:.6f} exit={_qc(exit_code)}"


def task_unschedulable(task: int, r: Resources) -> str:
    """``TASK <t> unschedulable cores=…``: larger than every connected worker."""
    return f"TASK {task} unschedulable cores={r.cores:g} memory={r.memory} disk={r.disk} gpus={r.gpus}"


def task_stale_result(task: int, attempt: int, worker: str) -> str:
    """``TASK <t> stale-result attempt=A worker=W``: a result nobody waits for (ignored)."""
    return f"TASK {task} stale-result attempt={attempt} worker={worker}"


def task_regenerate(task: int, file: str, cause: str) -> str:
    """``TASK <t> regenerate file=F cause=C``: a done task runs again to remake a lost temp."""
    return f"TASK {task} regenerate file={file} cause={q(cause)}"


def worker_connected(worker: str, node: str, host: str, r: Resources, cached: int, running: int) -> str:
    """``WORKER <w> connected node=… host=… cores=… cached=N running=N``: a worker said hello."""
    return (
        f"WORKER {worker} connected node={q(node)} host={q(host)} cores={r.cores:g} memory={r.memory}"
        f" disk={r.disk} gpus={r.gpus} cached={cached} running={running}"
    )


def worker_draining(worker: str) -> str:
    """``WORKER <w> draining``: it takes no new tasks and leaves when idle."""
    return f"WORKER {worker} draining"


def worker_disconnected(worker: str, cause: str, tasks: int) -> str:
    """``WORKER <w> disconnected cause=C tasks=N``: it left or was lost, with N tasks."""
    return f"WORKER {worker} disconnected cause={q(cause)} tasks={tasks}"


CacheEvent = Literal["insert", "evict", "forget"]


def cache(worker: str, event: CacheEvent, file: str) -> str:
    """``CACHE <w> insert|evict|forget file=F``: a file entered or left a worker's cache, or
    the manager told the worker to delete it (undeclared)."""
    return f"CACHE {worker} {event} file={file}"


def library_registered(name: str, mode: str, slots: int) -> str:
    """``LIBRARY <l> registered mode=M slots=S``: a client installed a library."""
    return f"LIBRARY {name} registered mode={mode} slots={slots}"


def library_removed(name: str) -> str:
    """``LIBRARY <l> removed``: a client removed it."""
    return f"LIBRARY {name} removed"


LibraryEvent = Literal["installing", "ready", "failed", "gone"]


def library_on(name: str, event: LibraryEvent, worker: str) -> str:
    """``LIBRARY <l> installing|ready|failed|gone worker=W``: an instance on one worker."""
    return f"LIBRARY {name} {event} worker={worker}"


def library_evicted(name: str, worker: str, for_: str) -> str:
    """``LIBRARY <l> evicted worker=W for=X``: an idle instance made room (for a library, or ``task``)."""
    return f"LIBRARY {name} evicted worker={worker} for={for_}"


def transfer_sent(file: str, source: str, peer: str | None, dest: str, size: int, seconds: float) -> str:
    """``TRANSFER <f> sent source=S peer=P dest=W bytes=B seconds=T``: a worker received a file."""
    return (
        f"TRANSFER {file} sent source={source} peer={q(peer)} dest={dest} bytes={size} seconds={seconds:.3f}"
    )


def transfer_failed(file: str, source: str, peer: str | None, dest: str, cause: str | None) -> str:
    """``TRANSFER <f> failed source=S peer=P dest=W cause=C``: a fetch failed."""
    return f"TRANSFER {file} failed source={source} peer={q(peer)} dest={dest} cause={q(cause)}"


def transfer_fetched(file: str, source: str, peer: str | None, client: str, size: int, seconds: float) -> str:
    """``TRANSFER <f> fetched source=S peer=P dest=client:C bytes=B seconds=T``: ``m.fetch_file``."""
    return (
        f"TRANSFER {file} fetched source={source} peer={q(peer)} dest={q('client:' + client)}"
        f" bytes={size} seconds={seconds:.3f}"
    )


def manager_started(manager: str, workflow: str, port: int, durable: bool, epoch: int) -> str:
    """``MANAGER <m> started workflow=W port=P durable=B epoch=E``."""
    return (
        f"MANAGER {manager} started workflow={q(workflow)} port={port}"
        f" durable={str(durable).lower()} epoch={epoch}"
    )


def manager_restored(
    manager: str, tasks: int, workers: int, libraries: int, files: int, replicas: int, seconds: float
) -> str:
    """``MANAGER <m> restored tasks=N workers=N libraries=N files=N replicas=N seconds=S``."""
    return (
        f"MANAGER {manager} restored tasks={tasks} workers={workers} libraries={libraries}"
        f" files={files} replicas={replicas} seconds={seconds:.3f}"
    )


def manager_reseed(manager: str, tasks: int) -> str:
    """``MANAGER <m> reseed tasks=N``: the store lost the workflow; all of it is written again."""
    return f"MANAGER {manager} reseed tasks={tasks}"


def manager_refusing(manager: str, cause: str) -> str:
    """``MANAGER <m> refusing-work cause=C``: new work is refused (the store is away)."""
    return f"MANAGER {manager} refusing-work cause={q(cause)}"


def manager_accepting(manager: str) -> str:
    """``MANAGER <m> accepting-work``: the store is back."""
    return f"MANAGER {manager} accepting-work"


def manager_stopped(manager: str) -> str:
    """``MANAGER <m> stopped``: a clean shutdown."""
    return f"MANAGER {manager} stopped"


def manager_perf(st: ManagerStatus) -> str:
    """``MANAGER <m> perf <state>=N ... bytes_<source>=B``: a performance snapshot."""
    p = st.perf
    states = _pairs(st.tasks, "")
    moved = _pairs(p.transfer_bytes, "bytes_")
    return (
        f"MANAGER {st.manager_id} perf {states} workers={len(st.workers)} "
        f"cores_total={p.cores_total:g} cores_in_use={p.cores_in_use:g} "
        f"submitted_total={st.totals.get('submitted', 0)} dispatched_total={p.dispatched} "
        f"completed_total={p.completed} dispatch_rate={p.dispatch_rate:.1f} "
        f"complete_rate={p.complete_rate:.1f} "
        f"cache_hits={p.cache_hits} cache_misses={p.cache_misses} {moved}"
    ).rstrip()


def _pairs(values: Mapping[str, int], prefix: str) -> str:
    return " ".join(f"{prefix}{k}={v}" for k, v in values.items())


#: every writer, for the test that parses each one's line back
WRITERS = (
    task_submitted,
    task_moved,
    task_unschedulable,
    task_stale_result,
    task_regenerate,
    worker_connected,
    worker_draining,
    worker_disconnected,
    cache,
    library_registered,
    library_removed,
    library_on,
    library_evicted,
    transfer_sent,
    transfer_failed,
    transfer_fetched,
    manager_started,
    manager_restored,
    manager_reseed,
    manager_refusing,
    manager_accepting,
    manager_stopped,
    manager_perf,
)


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
