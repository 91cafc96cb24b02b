"""The PNG of a run, looked at as a user would: every label readable (no text on top of other
text, nothing cut off), a legend naming every colour drawn — and every colour named drawn —
and the work filling the picture even when the manager waited long for its first worker."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest

from kubevine import report, txformat
from kubevine.report import png as report_png

from .helpers import RunResult


def _texts(fig: Any) -> list[tuple[str, Any]]:
    """Every text the figure draws, with its box in pixels: the title, and per panel its
    titles, axis labels, the tick labels inside the view, its notes and its legend."""
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks():
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    texts.append(tick.label1)
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    return [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts
        if t.get_visible() and t.get_text().strip()
    ]


def _drawn(run: report.Run, width: float = 14.0) -> tuple[Any, np.ndarray]:
    fig, _bars = report_png.figure(run, title="a run", width=width)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3]
    return fig, pixels


def _rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def _inside(fig: Any, pixels: np.ndarray, ax: Any) -> np.ndarray:
    """The pixels of one axes' plotting area (rows counted from the top)."""
    box = ax.get_window_extent(fig.canvas.get_renderer())
    h = pixels.shape[0]
    return pixels[int(h - box.y1) + 2 : int(h - box.y0) - 2, int(box.x0) + 2 : int(box.x1) - 2]


@pytest.mark.parametrize("width", [14.0, 9.0, 6.0])
def test_no_text_overlaps_other_text_or_leaves_the_picture(finished_run: RunResult, width: float) -> None:
    run = report.load(finished_run.log)
    fig, pixels = _drawn(run, width)
    texts = _texts(fig)
    assert len(texts) > 20  # titles, tick labels, axis labels, legends
    height, wide = pixels.shape[:2]
    for label, box in texts:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= wide and box.y1 <= height, f"{label!r} is cut off"
    clashes = [(a, b) for (a, box_a), (b, box_b) in combinations(texts, 2) if box_a.overlaps(box_b)]
    assert clashes == []


def test_the_legend_names_every_colour_on_the_timeline_and_each_is_there(finished_run: RunResult) -> None:
    run = report.load(finished_run.log)
    fig, pixels = _drawn(run)
    timeline = fig.axes[0]
    legend = [t.get_text() for t in timeline.get_legend().get_texts()]
    names = report.groups(run)
    assert set(names) == {"reco", "skim", "fit", "doomed"}
    assert set(names) <= set(legend)
    assert "failed attempt" in legend and "worker connected" in legend
    area = _inside(fig, pixels, timeline).reshape(-1, 3)
    colours = report_png.colours(names)
    for name in names:  # "doomed" tasks all fail: their bars must still show the doomed colour
        present = (area == _rgb(colours[name])).all(axis=1).sum()
        assert present > 20, f"the legend names {name!r} but the timeline has no bar of its colour"
    failed_red = (area == _rgb(report_png.FAILED)).all(axis=1).sum()
    assert failed_red > 0  # failed attempts are hatched red


def test_the_panels_below_have_their_legends_and_the_same_width(finished_run: RunResult) -> None:
    run = report.load(finished_run.log)
    fig, _pixels = _drawn(run)
    _timeline, states, moved = fig.axes
    assert {"done", "failed"} <= {t.get_text() for t in states.get_legend().get_texts()}
    assert {t.get_text().split(":")[0] for t in moved.get_legend().get_texts()} == set(txformat.SOURCES)
    renderer = fig.canvas.get_renderer()
    w_states = states.get_window_extent(renderer).width
    w_moved = moved.get_window_extent(renderer).width
    assert abs(w_states - w_moved) < 0.05 * w_moved  # neither is squeezed by a legend beside it


def _slow_start_lines() -> list[str]:
    lines = ["0 m MANAGER m started workflow=wf port=1"]
    for w in ("w1", "w2"):  # the workers come 20 s later; then 40 tasks run in 4 s
        lines.append(f"20000000 m WORKER {w} connected node=n cores=1")
    for i in range(40):
        t = 20_100_000 + i * 100_000
        w = ("w1", "w2")[i % 2]
        lines += [
            f"20050000 m TASK {i} waiting cores=1",
            f"20050000 m TASK {i} ready attempt=0 worker=- cause=submitted",
            f"{t} m TASK {i} dispatched attempt=1 worker={w} cause=placed",
            f"{t + 90_000} m TASK {i} done attempt=1 worker={w} cause=success",
        ]
    return lines


def test_a_long_wait_for_the_first_worker_is_cut_and_said_so() -> None:
    run = report.build(txformat.parse_lines(_slow_start_lines()))
    assert run.duration > 24 and run.busy_from - run.start == 20.0
    fig, _pixels = _drawn(run)
    timeline, states, moved = fig.axes
    for ax in (timeline, states, moved):
        left, right = ax.get_xlim()
        assert 19.0 < left < 20.0 and right >= run.duration  # the work fills the width
    assert "not shown: the first" in timeline.get_title(loc="left")


def test_a_run_that_starts_at_once_keeps_its_axes_from_zero() -> None:
    lines = _slow_start_lines()
    lines[0] = "19900000 m MANAGER m started workflow=wf port=1"  # workers within 0.1 s
    run = report.build(txformat.parse_lines(lines))
    fig, _pixels = _drawn(run)
    assert all(ax.get_xlim()[0] == 0 for ax in fig.axes)
    assert "not shown" not in fig.axes[0].get_title(loc="left")
