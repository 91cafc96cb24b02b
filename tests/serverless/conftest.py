"""Serverless tests share one local cluster per test, with a module path the workers can see."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from funcs import SLOW_IMPORT

from kubevine import LocalCluster, Manager


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on the workers' PYTHONPATH holding `slowmod`, a module slow to import."""
    d = tmp_path / "mods"
    d.mkdir()
    (d / "slowmod.py").write_text(
        f"import time\ntime.sleep({SLOW_IMPORT})\nIMPORTED_AT = time.time()\ndef value():\n    return 41\n"
    )
    (d / "brokenmod.py").write_text("raise ImportError('brokenmod cannot be imported on purpose')\n")
    # kept in front of the caller's path, so the engine under test is the one that runs there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(d), os.environ.get("PYTHONPATH")) if p))
    return d


@pytest.fixture
def manager(tmp_path: Path, modules: Path) -> Iterator[Callable[..., Manager]]:
    made: list[tuple[LocalCluster, Manager]] = []

    def make(**kw: Any) -> Manager:
        kw.setdefault("workers", 2)
        c = LocalCluster(workdir=tmp_path / f"c{len(made)}", **kw).start()
        m = Manager(c.address, token=c.token)
        made.append((c, m))
        return m

    yield make
    for c, m in made:
        m.close()
        c.stop()
