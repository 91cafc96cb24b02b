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
