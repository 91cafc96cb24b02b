"""examples/coffea_met.py runs as a user would run it, and draws its plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_coffea_met_example_computes_and_saves_its_plot(nanoaod_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "met.png"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "coffea_met.py"),
            str(nanoaod_file),
            "--steps-per-file",
            "4",
            "--output",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MET histogram: 2000 events from 1 file(s) in 4 partitions" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
