"""TaskVine compatibility, behaviour by behaviour: each test is written from TaskVine's manual
and its own tests' expectations (never copied from them), against real managers and workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kubevine as vine


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., vine.Manager]]:
    """``manager(**kw)``: a Manager as a TaskVine program makes one (closed afterwards); it runs
    in ``tmp_path`` so files TaskVine puts in the working directory land there."""
    monkeypatch.chdir(tmp_path)
    made: list[vine.Manager] = []

    def make(*args: Any, **kw: Any) -> vine.Manager:
        m = vine.Manager(*args, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def drain(m: vine.Manager, timeout: float = 60.0) -> list[vine.Task]:
    """Every task m still owes, as TaskVine programs collect them (``while not m.empty()``)."""
    out = []
    while not m.empty():
        t = m.wait(timeout)
        assert t is not None, "a task did not come back in time"
        out.append(t)
    return out
