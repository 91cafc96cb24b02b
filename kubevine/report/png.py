"""The PNG picture of a run (``kubevine report LOG -o run.png``), drawn with matplotlib.

A picture to paste in an issue or a talk: on top, a timeline of workers by time with one
bar per attempt (coloured by library or category, failed ones hatched, transfers marked);
below, the tasks in each state over time and the bytes moved from each source. Uses the
Agg backend, so it works on a headless machine and never opens a window.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from kubevine.report import (
    NO_GROUP,
    Run,
    bytes_series,
    groups,
    layout,
    stacked_bytes,
    state_series,
    summary,
    view_start,
)
from kubevine.txformat import SOURCES

DPI = 100
#: the state panel's colours, and the order the areas stack in (finished at the bottom)
STATE_STYLE = (
    ("done", "#4c9a5b", "done"),
    ("failed", "#d1495b", "failed"),
    ("cancelled", "#8d8d8d", "cancelled"),
    ("running", "#2f6fb0", "running"),
    ("dispatched", "#8fb8e0", "dispatched"),
    ("retrying", "#f0a040", "retrying"),
    ("ready", "#d9d9d9", "ready (waiting for a worker)"),
    ("waiting", "#b0a890", "waiting (for inputs)"),
)
LIBRARY_COLOUR = "#3b3b3b"
#: failed attempts keep their group's colour (the legend must match what is drawn) under red hatching
FAILED = "#d1495b"
SOURCE_COLOURS = {"peer": "#2f6fb0", "manager": "#e07b39", "url": "#7a5fa8"}
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#edc948",
    "#76b7b2",
    "#ff9da7",
    "#9c755f",
    "#e15759",
    "#bab0ac",
    "#86bcb6",
    "#d4a6c8",
)


def colours(names: list[str]) -> dict[str, str]:
    out = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)}
    if NO_GROUP in out and len(names) == 1:
        out[NO_GROUP] = PALETTE[0]
    return out


def short(label: str, width: int = 26) -> str:
    """A worker id that fits the axis: the middle is elided, the ends kept."""
    if len(label) <= width:
        return label
    keep = (width - 1) // 2
    return label[:keep] + "…" + label[-(width - 1 - keep) :]


def human_bytes(n: float, _pos: object = None) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def render(run: Run, path: Path, *, title: str | None = None, width: float = 14.0) -> int:
    """Draw the run into ``path``; returns the number of task bars drawn."""
    fig, drawn = figure(run, title=title, width=width)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return drawn


def figure(run: Run, *, title: str | None = None, width: float = 14.0) -> tuple[Any, int]:
    """The matplotlib ``Figure`` of the run (not saved), and the number of task bars in it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lanes = layout(run)
    workers = run.workers
    names = groups(run)
    palette = colours(names)
    timeline_h = min(9.0, max(2.6, 0.42 * len(workers) + 0.012 * lanes.total + 1.0))
    height = round(timeline_h + 3.6, 1)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # drawable without pyplot: savefig, or canvas.draw() and its pixels
    grid = fig.add_gridspec(2, 2, height_ratios=[timeline_h, 3.0])
    ax = fig.add_subplot(grid[0, :])
    ax_states = fig.add_subplot(grid[1, 0])
    ax_bytes = fig.add_subplot(grid[1, 1])
    heading = f"{title or 'kubevine run ' + run.workflow}: {summary(run)}"
    fig.suptitle(textwrap.fill(heading, int(width * 8.5)), fontsize=12)  # ~8.5 characters an inch at 12 pt

    drawn, starts, failed = _timeline(ax, run, lanes, palette, width)
    _timeline_legend(ax, run, names, palette, starts, failed)
    panel = (width - 1.6) / 2  # inches of one bottom panel
    x0 = view_start(run)
    _states_panel(ax_states, run, x0, panel)
    _bytes_panel(ax_bytes, run, x0, panel)
    return fig, drawn


def _timeline(ax: Any, run: Run, lanes: Any, palette: dict[str, str], width: float) -> tuple[int, int, bool]:
    """One band per worker, one lane per task running at once: the attempts as bars, when
    each worker was connected, libraries starting, transfers arriving, manager restarts.
    Returns the bars drawn, the library starts drawn and whether any attempt failed."""
    workers = run.workers
    t0 = run.start
    x0 = view_start(run)
    band: dict[str, tuple[float, float]] = {}  # worker -> (y of its band's bottom, lane height)
    for i, wid in enumerate(workers):
        _first, n = lanes.rows[wid]
        band[wid] = (i, 0.84 / n)
    for span in run.spans:  # shade when each worker was connected
        y0, _ = band.get(span.id, (None, 0.0))
        if y0 is None:
            continue
        end = span.disconnected if span.disconnected is not None else run.end
        ax.broken_barh(
            [(span.connected - t0, end - span.connected)], (y0 + 0.04, 0.92), color="#f3f3f3", zorder=0
        )
        if span.disconnected is not None and _lost(span.cause):
            ax.plot([span.disconnected - t0], [y0 + 0.5], marker="x", color="#d1495b", ms=7, zorder=4)
    bars: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    ys: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    drawn = 0
    for t in run.tasks.values():
        group = t.group if t.group in palette else "other"
        for a in t.attempts:
            y0, lane_h = band[a.worker]
            start = (a.start if a.start is not None else a.dispatched) - t0
            end = (a.end if a.end is not None else run.end) - t0
            key = (group, a.ok or a.outcome is None)
            bars.setdefault(key, []).append((start, max(end - start, 0.0)))
            ys.setdefault(key, []).append((y0 + 0.08 + a.lane * lane_h, lane_h * 0.9))
            drawn += 1
    min_w = max(run.duration, 1e-3) / (width * DPI)  # at least a pixel wide, so none is lost
    widths = sorted(w for spans in bars.values() for _x, w in spans)
    # back-to-back bars of one colour would merge into a band: outline them while they are
    # wide enough (a few pixels) for the outline not to hide them
    outline = bool(widths) and widths[len(widths) // 2] > 4 * min_w
    for (group, ok), xs in bars.items():
        _draw_bars(ax, xs, ys[(group, ok)], palette.get(group, "#bab0ac"), ok, min_w, outline)
    starts = [(ls, band[ls.worker][0]) for ls in run.library_spans if ls.worker in band]
    for ls, y0 in starts:  # a library starting on a worker: a thin dark bar along the band's top
        end = ls.end if ls.end is not None else run.end
        colour = "#d1495b" if ls.outcome == "failed" else LIBRARY_COLOUR
        ax.broken_barh(
            [(ls.start - t0, max(end - ls.start, min_w))], (y0 + 0.015, 0.05), color=colour, zorder=4
        )
    if run.transfers:
        tx = [(tr.time - t0, band[tr.dest][0] + 0.96) for tr in run.transfers if tr.dest in band]
        if tx:
            ax.scatter(
                [x for x, _ in tx],
                [y for _, y in tx],
                marker="v",
                s=14,
                color="#333333",
                zorder=5,
                linewidths=0,
            )
    for when, _mid in run.managers[1:]:
        ax.axvline(when - t0, color="#d1495b", ls="--", lw=1.2)
        ax.text(when - t0, len(workers) - 0.02, " manager restart", color="#d1495b", va="top", fontsize=8)
    step = max(1, len(workers) // 30)
    ax.set_yticks([i + 0.5 for i in range(0, len(workers), step)])
    ax.set_yticklabels([short(w) for w in workers[::step]], fontsize=8)
    ax.set_ylim(0, max(len(workers), 1))
    ax.invert_yaxis()
    ax.set_xlim(x0, max(run.duration, 1e-3) * 1.01)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("worker")
    heading = "tasks on workers (one bar per attempt)"
    if x0 > 0:
        heading += f"; not shown: the first {x0:.1f} s, when no worker or task was there yet"
    ax.set_title(textwrap.fill(heading, int((width - 2.6) * 12)), fontsize=10, loc="left")
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)
    return drawn, len(starts), any(not ok for _g, ok in bars)


def _timeline_legend(
    ax: Any, run: Run, names: list[str], palette: dict[str, str], starts: int, failed: bool
) -> None:
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(facecolor=palette[g], label=g) for g in names]
    if run.spans:
        handles.append(Patch(facecolor="#f3f3f3", edgecolor="#cccccc", label="worker connected"))
    if starts:
        handles.append(Patch(facecolor=LIBRARY_COLOUR, label=f"library starting ({starts})"))
    if failed:
        handles.append(Patch(facecolor="#e8e8e8", edgecolor=FAILED, hatch="////", label="failed attempt"))
    if run.transfers:
        from matplotlib.lines import Line2D

        handles.append(
            Line2D(
                [],
                [],
                marker="v",
                ls="",
                color="#333333",
                ms=5,
                label=f"file transfer ({len(run.transfers)})",
            )
        )
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


def _states_panel(ax_states: Any, run: Run, x0: float, panel: float) -> None:
    """Tasks by state over time, stacked."""
    from matplotlib.ticker import MaxNLocator

    times, series = state_series(run)
    present = [(s, c, label) for s, c, label in STATE_STYLE if any(series[s])]
    if present:
        ax_states.stackplot(
            times,
            *[series[s] for s, _c, _l in present],
            colors=[c for _s, c, _l in present],
            labels=[label for _s, _c, label in present],
            linewidth=0,
        )
    ax_states.set_xlim(x0, max(run.duration, 1e-3))
    ax_states.set_title("tasks by state", fontsize=10, loc="left")
    ax_states.set_xlabel("seconds since the run started")
    ax_states.set_ylabel("tasks")
    ax_states.yaxis.set_major_locator(MaxNLocator(integer=True))
    if present:  # below the panel, so both bottom panels get the same width and no data is hidden
        ax_states.legend(
            **_legend_below(ax_states, [label for _s, _c, label in present], panel), reverse=True
        )


def _bytes_panel(ax_bytes: Any, run: Run, x0: float, panel: float) -> None:
    """Bytes moved to workers, by source, stacked."""
    from matplotlib.ticker import FuncFormatter

    moved = bytes_series(run)
    # stacked, so a source that moved as much as another is not hidden under its line
    at, stacks = stacked_bytes(run)
    ax_bytes.stackplot(
        at,
        *[stacks[src] for src in SOURCES],
        colors=[SOURCE_COLOURS[src] for src in SOURCES],
        labels=[f"{src}: {human_bytes(moved[src][1][-1])}" for src in SOURCES],
        step="post",
        alpha=0.85,
        linewidth=0,
    )
    ax_bytes.set_xlim(x0, max(run.duration, 1e-3))
    ax_bytes.set_ylim(bottom=0)
    if not any(moved[src][1][-1] for src in SOURCES):
        ax_bytes.set_ylim(0, 1)
        ax_bytes.set_yticks([0])
        ax_bytes.text(0.5, 0.5, "no files moved", transform=ax_bytes.transAxes, ha="center", color="#777777")
    ax_bytes.yaxis.set_major_formatter(FuncFormatter(human_bytes))
    ax_bytes.set_title(
        textwrap.fill("bytes moved to workers, by source (stacked)", int(panel * 12)), fontsize=10, loc="left"
    )
    ax_bytes.set_xlabel("seconds since the run started")
    ax_bytes.legend(
        **_legend_below(ax_bytes, [f"{src}: {human_bytes(moved[src][1][-1])}" for src in SOURCES], panel)
    )
    ax_bytes.grid(color="#e5e5e5", lw=0.6)
    ax_bytes.set_axisbelow(True)


def _legend_below(ax: Any, labels: list[str], inches: float) -> dict[str, Any]:
    """Legend keywords: under a bottom panel's x label, in as many columns as fit its width
    (at 8 pt a character is about 0.07 in; a handle and the gaps about 0.5 in)."""
    per_entry = 0.5 + 0.07 * max((len(label) for label in labels), default=1)
    fit = max(1, min(len(labels), int(inches / per_entry)))
    rows = -(-len(labels) // fit)
    from matplotlib.transforms import offset_copy

    return {
        "loc": "upper center",
        "bbox_to_anchor": (0.5, 0.0),
        # below the tick labels and the x label, whatever the panel's height
        "bbox_transform": offset_copy(ax.transAxes, fig=ax.figure, y=-34, units="points"),
        "ncols": -(-len(labels) // rows),  # the same rows, as evenly filled as possible
        "fontsize": 8,
        "frameon": False,
        "borderaxespad": 0.0,
    }


def _lost(cause: str | None) -> bool:
    """A disconnection that was not the worker's own choice (a drain, an idle exit)."""
    return (
        cause is not None
        and cause not in ("manager restarted", "reconnected")
        and not cause.startswith("left")
    )


def _draw_bars(
    ax: Any,
    xs: list[tuple[float, float]],
    ys: list[tuple[float, float]],
    colour: str,
    ok: bool,
    min_w: float,
    outline: bool,
) -> None:
    """Many bars in a few collections (one per distinct lane position), fast for big runs."""
    by_y: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for (x, w), y in zip(xs, ys):
        by_y.setdefault(y, []).append((x, max(w, min_w)))
    style: dict[str, Any] = (
        {"facecolors": colour, "edgecolor": "white" if outline else "none", "linewidth": 0.5}
        if ok
        else {"facecolors": colour, "edgecolor": FAILED, "hatch": "////", "linewidth": 0.6}
    )
    for y, spans in by_y.items():
        ax.broken_barh(spans, y, zorder=3, **style)
