"""Fixtures for tests that need Kubernetes: `kube_api` (the emulator) and `kubelet`.

`kube_api` starts the API emulator in a thread of the test process and yields a
`KubeAPI` (url, kubeconfig path, env for kubectl/kopf subprocesses, `api_client()` for
the python `kubernetes` client, `call(fn)` to inspect the store). `kubelet` starts the
process kubelet with nodes node-a and node-b; `kubelet_factory(nodes=[...])` picks the
nodes. Every test in this folder is marked `kube`. See docs/dev/kube-harness.md.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubevine.operator.nodecache import Keeper

from .emulator import EmulatorThread, KubeAPI
from .kubelet import Kubelet, KubeletThread


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kube: runs against the Kubernetes API emulator (tests/kube harness)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = pathlib.Path(__file__).parent
    for item in items:
        if here in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kube)


@pytest.fixture
def kube_api(tmp_path: pathlib.Path) -> Iterator[KubeAPI]:
    """A fresh Kubernetes API emulator on 127.0.0.1 (a free port) for one test."""
    emulator = EmulatorThread(tmp_path / "kube-api")
    api = emulator.start()
    try:
        yield api
    finally:
        emulator.stop()


KubeletFactory = Callable[..., Kubelet]

#: The operator's default node cache root (KUBEVINE_OPERATOR_NODE_CACHE_ROOT).
NODE_CACHE_ROOT = "var/lib/kubevine/cache"


def prepare_node_caches(kubelet: Kubelet, namespaces: tuple[str, ...] = ("default",)) -> None:
    """What the chart's node-cache DaemonSet does on every node (this tier runs no
    DaemonSets): make each namespace's cache folder, which worker pods mount as a hostPath
    that must exist. Owned by the test's own user: here every container runs as it."""
    for node in kubelet.nodes:
        keeper = Keeper(kubelet.node_dir(node) / NODE_CACHE_ROOT, 1 << 40, uid=os.getuid(), gid=os.getgid())
        keeper.prepare(namespaces)


@pytest.fixture
def kubelet_factory(kube_api: KubeAPI, tmp_path: pathlib.Path) -> Iterator[KubeletFactory]:
    """Start a process kubelet: `kubelet_factory(nodes=["node-a"], dns_wait=5.0)`."""
    threads: list[KubeletThread] = []
    kubelets: list[Kubelet] = []

    def start(
        nodes: list[str | dict[str, Any]] | tuple[str, ...] = ("node-a", "node-b"), **kwargs: Any
    ) -> Kubelet:
        root = tmp_path / f"kubelet-{len(threads)}"

        def make() -> Kubelet:
            return Kubelet(kube_api.url, root, list(nodes), kubeconfig=kube_api.kubeconfig, **kwargs)

        thread = KubeletThread(make)
        threads.append(thread)
        kubelet = thread.start()
        kubelets.append(kubelet)
        prepare_node_caches(kubelet)
        return kubelet

    try:
        yield start
    finally:
        for thread in threads:
            thread.stop()
        leaked = [
            (run.namespace, run.name, c.name, c.proc.pid)
            for kubelet in kubelets
            for run in kubelet.runs.values()
            for c in run.all_containers()
            if c.proc is not None and c.proc.poll() is None
        ]
        assert not leaked, f"the process kubelet left processes running: {leaked}"


@pytest.fixture
def kubelet(kubelet_factory: KubeletFactory) -> Kubelet:
    """The process kubelet with two nodes, node-a and node-b."""
    return kubelet_factory()
