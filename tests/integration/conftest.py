"""Local clusters of real manager and worker processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevine import LocalCluster, Manager


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster (kwargs as LocalCluster's); everything is stopped afterwards."""
    started: list[LocalCluster] = []

    def start(**kw: Any) -> LocalCluster:
        kw.setdefault("workdir", tmp_path / f"cluster{len(started)}")
        c = LocalCluster(**kw)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def client() -> Iterator[Callable[..., Manager]]:
    """Connect clients to a cluster; all are closed afterwards."""
    made: list[Manager] = []

    def connect(c: LocalCluster, **kw: Any) -> Manager:
        m = Manager(c.address, token=c.token, **kw)
        made.append(m)
        return m

    yield connect
    for m in made:
        m.close()
