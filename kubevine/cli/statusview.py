"""``kubevine status`` as a person reads it: one screen, refreshed with ``--watch``.

The figures are the manager's :class:`~kubevine.stats.ManagerStatus` (the same the operator
and ``/metrics`` see); this module only lays them out, so the CLI stays a parser and the
layout can be tested without a manager.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from kubevine.stats import ManagerStatus
from kubevine.txformat import TASK_STATES as STATES

log = logging.getLogger(__name__)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"


def render(st: ManagerStatus) -> str:
    """The status as text, about one screen for a few dozen workers."""
    p = st.perf
    out: list[str] = []
    up = human_seconds(max(0.0, st.time - st.started))
    out.append(
        f"workflow {st.workflow}   manager {st.manager_id} ({st.address})   up {up}   "
        f"state in {'redis' if st.durable else 'memory (not fault tolerant)'}   clients {st.clients}"
    )
    if st.store_outage:
        out.append(
            f"STATE STORE UNREACHABLE for {human_seconds(st.store_outage)}"
            + ("; new work is refused until it returns" if st.refusing_work else "; running from memory")
        )
    if st.loading:
        out.append(
            f"LOADING  about {st.loading} task(s) still to read from the store: they join the counts "
            "below as they load; clients are welcomed once all are in"
        )
    held = sum(st.tasks.values())
    out.append(
        f"tasks    {held} held: "
        + "  ".join(
            f"{s} {st.tasks.get(s, 0)}" for s in STATES if st.tasks.get(s, 0) or s in ("ready", "running")
        )
    )
    out.append("totals   " + "  ".join(f"{k} {v}" for k, v in st.totals.items()))
    if st.unschedulable:
        out.append(f"         {st.unschedulable} unschedulable (larger than every worker)")
    h = p.task_wall
    mean = f"{h.sum / h.count:.3f}s" if h.count else "-"
    out.append(
        f"rates    {p.dispatch_rate:.1f} dispatched/s  {p.complete_rate:.1f} completed/s  "
        f"mean task wall time {mean}"
    )
    moved = [
        f"{k} {human_bytes(v)} in {p.transfers.get(k, 0)} files" for k, v in p.transfer_bytes.items() if v
    ]
    looked = p.cache_hits + p.cache_misses
    hit = f"{100 * p.cache_hits / looked:.0f}% hits" if looked else "no lookups"
    out.append(f"data     moved: {', '.join(moved) or 'nothing'}   cache: {hit}")
    demand = st.waiting
    out.append(
        f"cores    {p.cores_in_use:g} of {p.cores_total:g} in use   "
        f"waiting tasks ask for {demand.cores:g} cores, {demand.memory} MB"
    )
    out.append(f"workers  {len(st.workers)}")
    if st.workers:
        wid = max(12, min(40, max(len(w.id) for w in st.workers)))
        node = max(6, min(20, max(len(w.node) for w in st.workers)))
        out.append(
            f"  {'id':<{wid}} {'node':<{node}} {'state':<10} {'cores':>9} {'memory MB':>13} "
            f"{'running':>7} {'queued':>6} {'cached':>6} {'idle':>6}"
        )
        for w in st.workers:
            cores = f"{w.committed.cores:g}/{w.resources.cores:g}"
            mem = f"{w.committed.memory}/{w.resources.memory}"
            idle = "-" if w.idle_seconds is None else human_seconds(w.idle_seconds)
            state = w.state + ("*" if w.draining and w.state != "draining" else "")
            out.append(
                f"  {w.id[:wid]:<{wid}} {w.node[:node]:<{node}} {state:<10} {cores:>9} {mem:>13} "
                f"{w.running:>7} {w.queued:>6} {w.cached_files:>6} {idle:>6}"
            )
    if st.libraries:
        out.append(f"libraries {len(st.libraries)}")
        for lib in st.libraries:
            where = ", ".join(f"{n} {state}" for state, n in sorted(lib.instances.items())) or "no instances"
            broken = f"   BROKEN: {lib.broken}" if lib.broken else ""
            out.append(
                f"  {lib.name} ({lib.mode}, {lib.slots} slot{'s' if lib.slots != 1 else ''}): {where}; "
                f"calls {lib.active_calls} active, {lib.waiting_calls} waiting{broken}"
            )
    if st.recent_failures:
        out.append(f"recent failures (last {min(5, len(st.recent_failures))} of {len(st.recent_failures)})")
        for f in st.recent_failures[-5:]:
            code = "" if f.exit_code is None else f" exit {f.exit_code}"
            reason = (f.error or "").strip().splitlines()
            out.append(f"  task {f.task_id}: {f.outcome}{code}  {reason[-1][:100] if reason else ''}")
    return "\n".join(out)


def watch(
    fetch: Callable[[], ManagerStatus],
    interval: float,
    *,
    as_json: bool = False,
    count: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Fetch and show the status every ``interval`` seconds until interrupted (or ``count`` times).

    On a terminal the screen is redrawn in place; otherwise each update is appended (JSON:
    one object a line, for ``jq`` and friends). A manager that stops answering is reported
    and asked again at the next interval: it may be restarting.
    """
    stream = out or sys.stdout
    tty = stream.isatty()
    shown = 0
    try:
        while count is None or shown < count:
            due = time.monotonic() + interval
            try:
                st = fetch()
            except Exception as e:  # the manager may be restarting: say so, try again
                log.warning("status: %s", e)
            else:
                if as_json:
                    stream.write(st.model_dump_json() + "\n")
                elif tty:
                    stream.write("\x1b[H\x1b[2J" + render(st) + "\n")
                else:
                    stream.write(time.strftime("-- %H:%M:%S --\n") + render(st) + "\n")
                stream.flush()
                shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return 0
