"""One real run shared by the observability tests, and clusters that serve /metrics.

The run is made once per session (a few hundred command tasks on two local workers,
with a declared input, some tasks that fail, one retry each), because several tests
read the same transactions log: counted, parsed, drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevine import LocalCluster, Manager

from .helpers import N_TASKS, RunResult, workload


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunResult]:
    """A finished run of N_TASKS tasks; its cluster is stopped, its files stay."""
    workdir = tmp_path_factory.mktemp("observed-run")
    c = LocalCluster(workers=2, cores=2, workdir=workdir)
    c.start()
    try:
        with Manager(c.address, token=c.token) as m:
            tasks = workload(m, N_TASKS)
            for t in m.results(timeout=60):
                assert t.id is not None
        # the manager writes its last lines when it stops
    finally:
        c.stop()
    yield RunResult(workdir / "manager" / "transactions.log", workdir, tasks)


@pytest.fixture
def observed_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster whose manager serves /metrics on a free port and snapshots often."""
    started: list[LocalCluster] = []

    def start(**kw: Any) -> LocalCluster:
        monkeypatch.setenv("KUBEVINE_METRICS_PORT", "0")
        monkeypatch.setenv("KUBEVINE_STATS_INTERVAL", "0.1")
        kw.setdefault("workdir", tmp_path / f"cluster{len(started)}")
        c = LocalCluster(**kw)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def cluster_for_status(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two workers of two cores each."""
    c = LocalCluster(workers=2, cores=2, workdir=tmp_path / "status-cluster")
    c.start()
    yield c
    c.stop()
