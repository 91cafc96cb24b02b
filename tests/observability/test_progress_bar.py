"""``m.results(progress=True)``: a bar that reaches 100% in a terminal, and silence elsewhere."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from kubevine import progress

from .helpers import kubevine_env

SCRIPT = """
import sys
from kubevine import LocalCluster, Manager, Task

with LocalCluster(workers=2) as c, Manager(c.address, token=c.token) as m:
    for i in range(N):
        m.submit(Task(f"echo {i}"))
    got = sum(1 for _ in m.results(progress=True, timeout=60))
print(f"collected {got}", flush=True)
"""


def _script(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "progress_run.py"
    p.write_text(SCRIPT.replace("N", str(n)))
    return p


def test_in_a_terminal_the_bar_reaches_100_percent(tmp_path: Path) -> None:
    n = 60
    controller, terminal = pty.openpty()  # stderr and stdout are a terminal for the script
    proc = subprocess.Popen(
        [sys.executable, str(_script(tmp_path, n))],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=kubevine_env(COLUMNS="100"),
        cwd=tmp_path,
    )
    os.close(terminal)
    out = b""
    deadline = time.monotonic() + 90
    while True:
        assert time.monotonic() < deadline, out.decode(errors="replace")[-2000:]
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the script exited and closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(30) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert f"collected {n}" in text
    final = text.replace("\r", "\n").splitlines()
    bars = [line for line in final if "tasks:" in line]
    assert bars, text
    assert "100%" in bars[-1] and f"{n}/{n}" in bars[-1], bars[-1]


def test_without_a_terminal_asking_for_a_bar_writes_nothing(tmp_path: Path) -> None:
    n = 30
    done = subprocess.run(
        [sys.executable, str(_script(tmp_path, n))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
        env=kubevine_env(),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"collected {n}\n".encode()
    assert done.stderr == b"", done.stderr.decode(errors="replace")


def test_a_bar_is_only_made_when_asked_and_seen() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress.where(True, Tty()) == "terminal"
    assert progress.where(False, Tty()) is None
    assert progress.where(None, Tty()) is None
    assert progress.where(True, io.StringIO()) is None


def test_a_shown_bar_counts_to_its_total_and_grows_with_late_work() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with progress.bar(3, progress=True, desc="calls", file=out) as b:
        assert b.shown
        for _ in range(4):  # a fourth item arrived after the bar was made
            b.update()
        assert b.total == 4
    text = out.getvalue().replace("\r", "\n")
    assert "calls: 100%" in text and "4/4" in text


def test_track_yields_everything_wait_returns_and_stops_at_none() -> None:
    items = iter([1, 2, 3, None, 4])
    got = list(progress.track(lambda _t: next(items), 3, progress=False))
    assert got == [1, 2, 3]


def test_waiting_for_futures_with_a_bar_counts_failures() -> None:
    import concurrent.futures

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    futures: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(5)]
    for i, f in enumerate(futures):
        if i == 2:
            f.set_exception(ValueError("boom"))
        else:
            f.set_result(i)
    out = Tty()
    progress.wait_futures(futures, progress=True, desc="map", file=out)
    text = out.getvalue().replace("\r", "\n")
    assert "map: 100%" in text and "5/5" in text and "failed=1" in text
    silent = io.StringIO()
    progress.wait_futures(futures, progress=True, file=silent)
    assert silent.getvalue() == ""
