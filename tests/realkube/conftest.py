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

import contextlib
import fcntl
import os
import pathlib
import shutil
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from typing import IO

import pytest

from .controlplane import REPO, Cluster, Settings, ensure_binaries
from .helpers import Kube, wait_for
from .vine import Release

HERE = pathlib.Path(__file__).parent

#: Test clusters take one of these slots, each with its own names, networks and state folder,
#: different from `make cluster`'s (kv, 10.77/10.78): sessions in several checkouts or
#: terminals, and `make cluster`, can run at once. A slot is held by a lock on a file for the
#: session (released by the kernel even if the session dies) and cleaned up when taken.
SLOTS = 4
LOCK_DIR = pathlib.Path("/tmp/kubevine-realkube")


def _slot_settings(slot: int) -> Settings:
    return Settings(
        state=REPO / ".cluster" / f"pytest-{slot}",
        name=f"kvt{slot}",
        node_net=f"10.{79 + 2 * slot}.0.0/16",
        pod_net=f"10.{80 + 2 * slot}.0.0/16",
    )


def _take_slot() -> tuple[int, IO[bytes]]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for slot in range(SLOTS):
        f = open(LOCK_DIR / f"slot-{slot}.lock", "wb")  # noqa: SIM115 (held for the session)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return slot, f
    raise RuntimeError(f"all {SLOTS} test-cluster slots are in use (locks in {LOCK_DIR})")


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


BUILD_ERRORS: list[str] = []


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
        try:
            ensure_binaries()
        except RuntimeError as e:  # the tier's tests fail with this; the rest of the session runs
            BUILD_ERRORS.append(str(e))


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[Cluster]:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    if BUILD_ERRORS:
        pytest.fail(f"the control plane's binaries could not be built: {BUILD_ERRORS[0]}")
    slot, lock = _take_slot()
    try:
        cluster = Cluster(_slot_settings(slot)).start()
        try:
            yield cluster
        finally:
            cluster.stop()
            left = cluster.leftovers()
            assert not left, f"the test cluster left behind: {left}"
    finally:
        lock.close()


KubeFactory = Callable[..., Kube]
WORKFLOWS = "/apis/kubevine.io/v1alpha1"
#: A test's pods are stopped at once when it ends (SIGTERM, SIGKILL a second later), whatever
#: grace period they asked for: nothing of a finished test is worth waiting for.
QUICK_DELETE = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 1}


def _workflows(kube: Kube) -> list[str]:
    try:
        found = kube.get(f"{WORKFLOWS}/namespaces/{kube.ns}/vineworkflows")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    return [w["metadata"]["name"] for w in (found or {}).get("items") or []]


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
        # The workflows first, as a careful admin would: the operator releases them while their
        # namespace still takes Events, so no test leaves it a terminating namespace to meet.
        for kube in made:
            with contextlib.suppress(urllib.error.HTTPError):  # 404: no CRD (no release yet)
                kube.admin.request("DELETE", f"{WORKFLOWS}/namespaces/{kube.ns}/vineworkflows")
        for kube in made:
            wait_for(lambda: not _workflows(kube), timeout=60, interval=0.2,  # noqa: B023
                     what=f"the VineWorkflows of {kube.ns} to be released by the operator")  # fmt: skip
        for kube in made:
            # Terminating first (no controller can create pods in it any more), then its pods
            # at once rather than when the namespace controller's sweep reaches them.
            kube.admin.request("DELETE", f"/api/v1/namespaces/{kube.ns}")
            kube.admin.request("DELETE", f"/api/v1/namespaces/{kube.ns}/pods", QUICK_DELETE)
        # A pod is gone only once its kubelet saw its processes end: waiting for the pods (not
        # for the whole namespace, which the controller finishes seconds later) is enough to
        # know this test left nothing running.
        for kube in made:
            pods = f"/api/v1/namespaces/{kube.ns}/pods"
            wait_for(lambda: not kube.get(pods)["items"], timeout=90, interval=0.2, what=f"{pods} to be gone")  # noqa: B023


@pytest.fixture
def kube(kube_factory: KubeFactory) -> Kube:
    """A fresh namespace on the session's real cluster."""
    return kube_factory()


@pytest.fixture(scope="session")
def kubevine(real_cluster: Cluster) -> Release:
    """The chart installed once for the session with `helm install` (cluster-wide, fast
    autoscaler pace), in the namespace `kubevine` (Pod Security privileged, for the node-cache
    keeper); its operator pod Ready and a keeper Ready on every node. A test that stops the
    operator starts it again before it ends."""
    release = Release(real_cluster, "kubevine", values={"rbac": {"clusterWide": True}})
    release.create_namespace()
    release.install()
    release.wait_ready()
    # Nothing to undo: it lives as long as the session's cluster, whose end stops every
    # process of every node (and `real_cluster` asserts that nothing is left).
    return release
