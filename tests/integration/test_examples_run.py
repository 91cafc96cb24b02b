"""The examples are run by the suite, so they never rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_workflow_runs_and_prints_its_summary() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--tasks", "40", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "40 submitted, 40 successful, 0 failed" in out.stdout
    assert "words        80000 counted; expected 80000" in out.stdout
    assert out.stderr == ""  # no progress bar when not asked for, no stray logs


def test_the_demo_draws_its_run_when_asked(tmp_path: Path) -> None:
    png, html = tmp_path / "demo.png", tmp_path / "demo.html"
    demo = [sys.executable, str(ROOT / "examples" / "demo.py"), "--tasks", "20", "--no-progress"]
    out = subprocess.run(
        [*demo, "--report", str(png), "--report", str(html)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"report       {png}" in out.stdout and f"report       {html}" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    page = html.read_text()
    assert "<title>make demo</title>" in page
    assert "20 tasks (20 done, 0 failed) on 2 workers" in page  # drawn from this run's own log
    bad = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--report", str(tmp_path / "demo.svg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and ".png or .html" in bad.stderr  # refused before anything runs
