"""Fixtures for the real-cluster tier: one real control plane per session, a namespace per test.

`real_cluster` (session): kube-apiserver, kube-controller-manager, kube-scheduler and etcd
built from Go modules (hack/cluster/build.sh), with three process-kubelet nodes in network
namespaces, started once (about 5 s) and stopped at the end, leaving nothing running.
The binaries are built before the first test when they are missing — **the first run builds
for many minutes** (docs/dev/real-cluster.md has the measured time) — outside any test's
timeout. `kube` (per test): a fresh namespace, deleted (and waited for: every pod's processes
gone) afterwards; `kube_factory(psa="restricted")` makes more, with Pod Security labels.

The tier needs root (namespaces, a bridge, cgroups); without it, or with KUBEVINE_REALKUBE=0,
its tests are skipped. Every test here is marked `realkube` (`-m "not realkube"` leaves them out).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from .controlplane import REPO, Cluster, Settings, ensure_binaries
from .helpers import Kube, wait_for

HERE = pathlib.Path(__file__).parent

#: The test cluster's names and networks differ from `make cluster`'s (kv, 10.77/10.78),
#: so both can run at once.
TEST_NAME, TEST_NODE_NET, TEST_POD_NET = "kvt", "10.79.0.0/16", "10.80.0.0/16"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "realkube: runs against a real control plane with process-kubelet nodes (tests/realkube)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realkube)


def _unavailable() -> str | None:
    if os.environ.get("KUBEVINE_REALKUBE", "1") == "0":
        return "KUBEVINE_REALKUBE=0"
    if os.geteuid() != 0:
        return "the real-cluster tier needs root (network namespaces, a bridge, cgroups)"
    for tool in ("ip", "nsenter", "unshare", "openssl", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs, so the build is not charged to a test's timeout."""
    if _unavailable() is not None or session.config.option.collectonly:
        return
    if any(item.get_closest_marker("realkube") for item in session.items):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "realkube: building the control plane's binaries if missing (hack/cluster/build.sh; "
                "the first build takes many minutes)"
            )
        ensure_binaries()


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[Cluster]:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    settings = Settings(
        state=REPO / ".cluster" / "pytest", name=TEST_NAME, node_net=TEST_NODE_NET, pod_net=TEST_POD_NET
    )
    cluster = Cluster(settings).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        assert not left, f"the test cluster left behind: {left}"


KubeFactory = Callable[..., Kube]


@pytest.fixture
def kube_factory(real_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[KubeFactory]:
    """`kube_factory(psa="restricted")`: a new namespace (Pod Security `enforce` label if given)."""
    made: list[Kube] = []

    def make(psa: str | None = None) -> Kube:
        base = request.node.name.lower().replace("_", "-")[:40].strip("-")
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        labels = {"pod-security.kubernetes.io/enforce": psa} if psa else {}
        kube = Kube(real_cluster, name)
        kube.admin.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
        )
        made.append(kube)
        # Pods can be created once the controller-manager made the default ServiceAccount.
        wait_for(
            lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            timeout=30,
            what=f"the default ServiceAccount of {name}",
        )
        return kube

    try:
        yield make
    finally:
        for kube in made:
            kube.admin.request("DELETE", f"/api/v1/namespaces/{kube.ns}")
        for kube in made:  # namespace gone = every pod deleted by its kubelet = processes gone
            path = f"/api/v1/namespaces/{kube.ns}"
            wait_for(lambda: kube.get(path) is None, timeout=90, interval=0.2, what=f"{path} to be deleted")  # noqa: B023


@pytest.fixture
def kube(kube_factory: KubeFactory) -> Kube:
    """A fresh namespace on the session's real cluster."""
    return kube_factory()
