"""``kubevine report`` turns a real run's transactions log into a PNG and an HTML page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import N_TASKS, RunResult


def _report(log: Path, *outputs: Path, width: float | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubevine", "report", str(log)]
    for o in outputs:
        cmd += ["-o", str(o)]
    if width is not None:
        cmd += ["--width", str(width)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="kubevine-run">(.*?)</script>', page, re.S)
    assert m, "no embedded run data"
    return json.loads(m.group(1))


def test_the_html_page_has_one_bar_per_attempt_of_every_task(finished_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "run.html"
    done = _report(finished_run.log, out)
    assert done.returncode == 0, done.stderr
    assert f"{N_TASKS} tasks" in done.stdout
    page = out.read_text()
    data = _embedded(page)
    fields = data["bar_fields"]
    bars = [dict(zip(fields, b)) for b in data["bars"]]
    assert {b["task"] for b in bars} == set(finished_run.tasks)
    attempts = {tid: t.attempts for tid, t in finished_run.tasks.items()}
    assert len(bars) == sum(attempts.values())
    for b in bars:  # each bar sits on a worker that exists, inside the run, and ends after it starts
        assert 0 <= b["worker"] < len(data["workers"])
        assert 0 <= b["start"] <= b["end"] <= data["duration"] + 1e-6
    last = {b["task"]: b for b in sorted(bars, key=lambda b: b["attempt"])}
    for tid, t in finished_run.tasks.items():
        assert data["workers"][last[tid]["worker"]]["id"] == t.worker
        assert last[tid]["outcome"] == t.outcome
    groups = {g["name"] for g in data["groups"]}
    assert groups == {"reco", "skim", "fit", "doomed"}
    assert data["tasks"]["by_state"]["done"] == finished_run.successful
    assert data["bytes_by_source"]["manager"] > 0


def test_the_html_page_is_self_contained(finished_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "run.html"
    assert _report(finished_run.log, out).returncode == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # nothing is loaded from anywhere: no external scripts, styles, images or fonts
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=|@import|url\(http", page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_the_png_has_the_asked_size_and_is_not_blank(finished_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "run.png"
    done = _report(finished_run.log, out, width=12)
    assert done.returncode == 0, done.stderr
    img = Image.open(out)
    assert img.format == "PNG"
    width, height = img.size
    assert width == 1200  # 12 inches at 100 dpi
    assert 500 <= height <= 1300
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    not_white = (pixels < 245).any(axis=1).mean()
    assert not_white > 0.10, f"only {not_white:.1%} of the picture is drawn"
    colours = {tuple(int(c) // 16 for c in p) for p in pixels[:: max(1, len(pixels) // 20000)]}
    assert len(colours) > 12  # bars of four categories, panels, text: not a blank canvas


def test_png_and_html_come_from_one_command(finished_run: RunResult, tmp_path: Path) -> None:
    done = _report(finished_run.log, tmp_path / "a.png", tmp_path / "b.html")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.png").stat().st_size > 10_000
    assert (tmp_path / "b.html").stat().st_size > 10_000


def test_an_unknown_output_kind_is_refused_with_a_message(finished_run: RunResult, tmp_path: Path) -> None:
    done = _report(finished_run.log, tmp_path / "run.pdf")
    assert done.returncode == 2
    assert ".png or .html" in done.stderr


def test_a_missing_log_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    done = _report(tmp_path / "nope.log", tmp_path / "run.png")
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_the_html_pages_script_is_valid_javascript(finished_run: RunResult, tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node to check the page's script with")
    out = tmp_path / "run.html"
    assert _report(finished_run.log, out).returncode == 0
    scripts = re.findall(r"<script>(.*?)</script>", out.read_text(), re.S)
    assert len(scripts) == 1
    js = tmp_path / "page.js"
    js.write_text(scripts[0])
    done = subprocess.run([node, "--check", str(js)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
