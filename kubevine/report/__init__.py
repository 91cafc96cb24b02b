"""A run, read back from its transactions log: what ``kubevine report`` draws.

TaskVine users plot their transactions log to see where a run spent its time; this module
turns kubevine's log (grammar in :mod:`kubevine.txformat`) into a :class:`Run` -- tasks
with their attempts, workers with the time they were connected, transfers, and the
number of tasks in each state over time -- and lays the attempts out as bars on
worker lanes. The renderers (:mod:`kubevine.report.png` with matplotlib,
:mod:`kubevine.report.html` as a self-contained page) only draw what is computed here,
so the two pictures always agree, and the parsing is tested without drawing anything.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kubevine.states import FINAL
from kubevine.txformat import SOURCES, TASK_STATES, Event, parse_lines

NO_GROUP = "(no category)"


@dataclass(slots=True)
class Attempt:
    """One attempt of a task on a worker; a bar on the timeline."""

    task: int
    attempt: int
    worker: str
    dispatched: float
    start: float | None = None  # when it started on the worker (worker clock if reported)
    end: float | None = None
    outcome: str | None = None  # success, exit_nonzero, ..., lost, cancelled
    lane: int = 0  # filled in by layout()

    @property
    def ok(self) -> bool:
        return self.outcome == "success"


@dataclass(slots=True)
class TaskInfo:
    id: int
    submitted: float | None = None
    kind: str | None = None
    category: str | None = None
    library: str | None = None
    tag: str | None = None
    cores: float = 1.0
    state: str = "waiting"
    finished: float | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def group(self) -> str:
        """What the bar's colour says: the library, else the category."""
        return self.library or self.category or NO_GROUP


@dataclass(slots=True)
class WorkerSpan:
    id: str
    node: str | None
    cores: float
    connected: float
    disconnected: float | None = None
    cause: str | None = None


@dataclass(slots=True)
class Transfer:
    time: float
    file: str
    source: str
    dest: str | None
    bytes: int
    ok: bool = True


@dataclass(slots=True)
class LibrarySpan:
    """A library instance starting on a worker: from ``installing`` to ``ready`` (or failure)."""

    worker: str
    name: str
    start: float
    end: float | None = None
    outcome: str | None = None  # ready, failed, gone, evicted


@dataclass(slots=True)
class Run:
    workflow: str = "?"
    start: float = 0.0
    end: float = 0.0
    managers: list[tuple[float, str]] = field(default_factory=list)  # (start time, manager id)
    tasks: dict[int, TaskInfo] = field(default_factory=dict)
    spans: list[WorkerSpan] = field(default_factory=list)  # a worker reconnecting has several
    transfers: list[Transfer] = field(default_factory=list)
    cache_events: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, worker, op, file)
    libraries: list[Event] = field(default_factory=list)
    library_spans: list[LibrarySpan] = field(default_factory=list)
    # (time, counts by state) after each change of the state counts
    states: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    perf: list[Event] = field(default_factory=list)
    events: int = 0

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def busy_from(self) -> float:
        """When the first worker connected or the first task was submitted (``start`` if
        neither happened): before it, only the manager was there."""
        times = [s.connected for s in self.spans]
        times += [t.submitted for t in self.tasks.values() if t.submitted is not None]
        times += [a.dispatched for t in self.tasks.values() for a in t.attempts]
        return max(self.start, min(times, default=self.start))

    @property
    def workers(self) -> list[str]:
        """Worker ids in the order they first connected (or first ran something)."""
        seen: dict[str, None] = {}
        for s in self.spans:
            seen.setdefault(s.id, None)
        for t in self.tasks.values():
            for a in t.attempts:
                seen.setdefault(a.worker, None)
        return list(seen)

    def attempts(self) -> list[Attempt]:
        return [a for t in self.tasks.values() for a in t.attempts]

    def counts(self) -> dict[str, int]:
        """Tasks by their last known state."""
        out = dict.fromkeys(TASK_STATES, 0)
        for t in self.tasks.values():
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def bytes_by_source(self) -> dict[str, int]:
        out = dict.fromkeys(SOURCES, 0)
        for tr in self.transfers:
            if tr.ok:
                out[tr.source] = out.get(tr.source, 0) + tr.bytes
        return out


def load(path: str | Path) -> Run:
    """Read a transactions log into a :class:`Run` (a torn last line is skipped)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return build(parse_lines(f))


def build(events: Iterable[Event]) -> Run:
    run = Run()
    counts = dict.fromkeys(TASK_STATES, 0)
    open_spans: dict[str, WorkerSpan] = {}
    starting: dict[tuple[str, str], LibrarySpan] = {}
    first = True
    for e in events:
        run.events += 1
        if first:
            run.start = e.time
            first = False
        run.end = max(run.end, e.time)
        kind = e.kind
        if kind == "TASK":
            if _task_event(run, e, counts):
                run.states.append((e.time, dict(counts)))
        elif kind == "WORKER":
            _worker_event(run, e, open_spans)
        elif kind == "TRANSFER" and e.event in ("sent", "failed"):  # not client fetches
            src = e.get("source", "manager") or "manager"
            run.transfers.append(
                Transfer(e.time, e.subject, src, e.get("dest"), int(e.num("bytes")), e.event == "sent")
            )
        elif kind == "CACHE":
            run.cache_events.append((e.time, e.subject, e.event, e.get("file", "") or ""))
        elif kind == "LIBRARY":
            run.libraries.append(e)
            _library_event(run, e, starting)
        elif kind == "MANAGER":
            if e.event == "started":
                run.managers.append((e.time, e.subject))
                run.workflow = e.get("workflow", run.workflow) or run.workflow
                # workers of the previous manager are gone from its point of view
                for s in open_spans.values():
                    s.disconnected, s.cause = e.time, "manager restarted"
                open_spans.clear()
            elif e.event == "perf":
                run.perf.append(e)
    for span in starting.values():
        span.end = run.end
    for t in run.tasks.values():  # attempts still open when the log ends
        for a in t.attempts:
            if a.end is None:
                a.end = run.end
                if a.start is None:
                    a.start = a.dispatched
    return run


def _task_event(run: Run, e: Event, counts: dict[str, int]) -> bool:
    """Apply one TASK line; True when the state counts changed."""
    try:
        tid = int(e.subject)
    except ValueError:
        return False
    state = e.event
    if state not in counts:  # stale-result, unschedulable: no state change
        return False
    t = run.tasks.get(tid)
    if t is None:
        t = run.tasks[tid] = TaskInfo(tid)
    else:
        counts[t.state] -= 1
    counts[state] += 1
    if state == "waiting":
        t.submitted = e.time
        t.kind = e.get("type")
        t.category = e.get("category")
        t.library = e.get("library")
        t.tag = e.get("tag")
        t.cores = e.num("cores", 1.0)
    elif state == "dispatched":
        worker = e.get("worker") or "?"
        t.attempts.append(Attempt(tid, int(e.num("attempt")), worker, e.time))
    elif state == "running":
        a = _open_attempt(t)
        if a is not None:
            a.start = e.time
    else:
        a = _open_attempt(t)
        if a is not None:
            _close(a, e, state)
    if state in FINAL:
        t.finished = e.time
    t.state = state
    return True


def _open_attempt(t: TaskInfo) -> Attempt | None:
    if t.attempts and t.attempts[-1].end is None:
        return t.attempts[-1]
    return None


def _close(a: Attempt, e: Event, state: str) -> None:
    """End an attempt at a done/failed/retrying/cancelled/ready line."""
    end = e.time
    wall = e.fields.get("wall")
    started = e.num("started", 0.0)
    if wall is not None:
        w = float(wall)
        # the worker's own clock, when it is close to ours; else count back from now
        begin = started if started and a.dispatched - 5 <= started <= end + 5 else end - w
        a.start, a.end = begin, begin + w
    else:
        a.start = a.start if a.start is not None else a.dispatched
        a.end = end
    if state == "ready":
        a.outcome = "lost"
    elif state == "cancelled":
        a.outcome = "cancelled"
    elif state == "retrying":
        a.outcome = (e.get("cause") or "failed").split()[-1]
    else:
        a.outcome = e.get("cause") or state


def _library_event(run: Run, e: Event, starting: dict[tuple[str, str], LibrarySpan]) -> None:
    worker = e.get("worker")
    if worker is None:  # registered / removed: the workflow's, not a worker's
        return
    key = (worker, e.subject)
    if e.event == "installing":
        span = LibrarySpan(worker, e.subject, e.time)
        run.library_spans.append(span)
        starting[key] = span
    elif e.event in ("ready", "failed", "gone", "evicted") and key in starting:
        done = starting.pop(key)
        done.end, done.outcome = e.time, e.event


def _worker_event(run: Run, e: Event, open_spans: dict[str, WorkerSpan]) -> None:
    wid = e.subject
    old = open_spans.pop(wid, None)
    if e.event == "connected":
        if old is not None:
            old.disconnected, old.cause = e.time, "reconnected"
        span = WorkerSpan(wid, e.get("node"), e.num("cores", 1.0), e.time)
        run.spans.append(span)
        open_spans[wid] = span
    elif e.event == "disconnected":
        if old is not None:
            old.disconnected, old.cause = e.time, e.get("cause")
    elif old is not None:  # draining: still connected
        open_spans[wid] = old


# ------------------------------------------------------------------ layout


@dataclass(slots=True)
class Lanes:
    """Where each worker's bars go: ``rows[worker] = (first row, number of lanes)``."""

    rows: dict[str, tuple[int, int]]
    total: int


def layout(run: Run) -> Lanes:
    """Put each worker's attempts on lanes so that bars running at once never overlap."""
    by_worker: dict[str, list[Attempt]] = {}
    for a in run.attempts():
        by_worker.setdefault(a.worker, []).append(a)
    rows: dict[str, tuple[int, int]] = {}
    row = 0
    for wid in run.workers:
        attempts = sorted(by_worker.get(wid, []), key=lambda a: (a.start or a.dispatched, a.task))
        free: list[tuple[float, int]] = []  # (time a lane frees up, lane)
        n = 0
        for a in attempts:
            begin = a.start if a.start is not None else a.dispatched
            if free and free[0][0] <= begin + 1e-9:
                _, lane = heapq.heappop(free)
            else:
                lane, n = n, n + 1
            a.lane = lane
            heapq.heappush(free, (a.end if a.end is not None else begin, lane))
        n = max(n, 1)
        rows[wid] = (row, n)
        row += n
    return Lanes(rows, row)


def state_series(run: Run, points: int = 400) -> tuple[list[float], dict[str, list[int]]]:
    """Tasks in each state at ``points`` evenly spaced times (seconds from the start)."""
    span = max(run.duration, 1e-6)
    times = [span * i / (points - 1) for i in range(points)]
    series: dict[str, list[int]] = {s: [] for s in TASK_STATES}
    current = dict.fromkeys(TASK_STATES, 0)
    i = 0
    for t in times:
        while i < len(run.states) and run.states[i][0] - run.start <= t + 1e-9:
            current = run.states[i][1]
            i += 1
        for s in TASK_STATES:
            series[s].append(current.get(s, 0))
    return times, series


def bytes_series(run: Run) -> dict[str, tuple[list[float], list[int]]]:
    """Cumulative bytes moved from each source kind: (seconds from start, bytes)."""
    out: dict[str, tuple[list[float], list[int]]] = {}
    for src in SOURCES:
        xs, ys, total = [0.0], [0], 0
        for tr in run.transfers:
            if tr.source == src and tr.ok:
                total += tr.bytes
                xs.append(tr.time - run.start)
                ys.append(total)
        xs.append(run.duration)
        ys.append(total)
        out[src] = (xs, ys)
    return out


#: a lead-in (the manager alone) longer than this share of the run is cut from the pictures
LEAD_IN_SHARE = 0.15


def view_start(run: Run) -> float:
    """Where the pictures' time axes start (seconds since the run started): 0, or just before
    the first worker or task when the manager was alone for a good part of the run (a slow
    start would squeeze the work to one side)."""
    lead = run.busy_from - run.start
    if run.duration <= 0 or lead <= LEAD_IN_SHARE * run.duration:
        return 0.0
    return max(0.0, lead - 0.03 * (run.duration - lead))


def stacked_bytes(run: Run) -> tuple[list[float], dict[str, list[int]]]:
    """Cumulative bytes by source read at every time any of them changed: one common time
    axis, so the sources can be stacked."""
    moved = bytes_series(run)
    at = sorted({x for src in SOURCES for x in moved[src][0]} | {run.duration})
    out: dict[str, list[int]] = {}
    for src in SOURCES:
        xs, ys = moved[src]
        values, i = [], 0
        for t in at:
            while i + 1 < len(xs) and xs[i + 1] <= t:
                i += 1
            values.append(ys[i])
        out[src] = values
    return at, out


def groups(run: Run, limit: int = 12) -> list[str]:
    """Bar colour groups, most tasks first; beyond ``limit`` they share "other"."""
    n: dict[str, int] = {}
    for t in run.tasks.values():
        if t.attempts:
            n[t.group] = n.get(t.group, 0) + 1
    ordered = sorted(n, key=lambda g: (-n[g], g))
    return ordered if len(ordered) <= limit else [*ordered[: limit - 1], "other"]


def summary(run: Run) -> str:
    c = run.counts()
    return (
        f"{len(run.tasks)} tasks ({c['done']} done, {c['failed']} failed"
        + (f", {c['cancelled']} cancelled" if c["cancelled"] else "")
        + f") on {len(run.workers)} workers in {run.duration:.1f} s"
    )


def render(run: Run, out: str | Path, *, title: str | None = None, width: float = 14.0) -> Path:
    """Draw ``run`` to ``out``: ``.png`` (matplotlib) or ``.html`` (a self-contained page)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".png":
        from kubevine.report import png as report_png

        report_png.render(run, path, title=title, width=width)
    elif suffix in (".html", ".htm"):
        from kubevine.report import html as report_html

        report_html.render(run, path, title=title)
    else:
        raise ValueError(f"{out}: the report is written as .png or .html")
    return path
