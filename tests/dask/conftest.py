"""One local cluster (2 workers x 1 core) for the dask tests; a fresh client per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nanoaod import write_nanoaod

from kubevine import LocalCluster, Manager


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(workers=2, workdir=tmp_path_factory.mktemp("dask-cluster")).start()
    yield c
    c.stop()


@pytest.fixture
def m(dask_cluster: LocalCluster) -> Iterator[Manager]:
    with Manager(dask_cluster.address, token=dask_cluster.token) as manager:
        yield manager


@pytest.fixture(scope="session")
def nanoaod_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nanoaod(tmp_path_factory.mktemp("nanoaod") / "nano.root")
