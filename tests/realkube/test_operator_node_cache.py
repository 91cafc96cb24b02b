"""The node cache is the platform's: a workflow cannot name a host path (the API server refuses
the field and hostPath volumes), its folder is `<root>/<namespace>` made by the node-cache
keeper as the workers' user, and the keeper keeps the whole node under its limit — whichever
workers filled it — and clears what killed workers left."""

from __future__ import annotations

import os
import time

from .controlplane import Cluster
from .helpers import Kube, wait_for
from .vine import Release, Workflows, cached_files, node_cache_dir, pool_spec, workflow


def test_a_workflow_can_name_no_host_path(kubevine: Release, kube: Kube) -> None:
    wf = Workflows(kube)
    named = pool_spec()
    named["workers"]["nodeCache"] = {"hostPath": "/etc"}
    refused = wf.apply(workflow("etc", named), check=False)
    assert refused.returncode != 0 and 'unknown field "spec.workers.nodeCache.hostPath"' in refused.stderr, (
        refused.stderr
    )
    mounted = pool_spec(volumes=[{"name": "etc", "hostPath": {"path": "/etc"}}])
    refused = wf.apply(workflow("etc", mounted), check=False)
    assert refused.returncode != 0 and "hostPath" in refused.stderr, refused.stderr
    assert wf.get("etc") is None


def test_the_keeper_keeps_the_node_under_its_limit_and_clears_leftovers(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    wf.apply(workflow("fill", pool_spec()))  # a workflow of the namespace: its folder is made on every node
    folder = node_cache_dir(real_cluster, "node-b", kube.ns)
    wait_for(folder.is_dir, timeout=30, what=f"the keeper to make {folder}")
    stat = folder.stat()
    assert (stat.st_uid, stat.st_gid) == (10001, 10001)

    # What workers of two workflows left on node-b: 3 MiB of cache, oldest first, one file
    # still hard-linked into a running task's sandbox, and the leftovers of a killed worker.
    now = time.time()
    sandbox = folder.parent.parent / "sandbox-of-a-running-task"
    sandbox.mkdir(exist_ok=True)
    for i in range(6):
        entry = folder / f"file-{i:02d}"
        entry.write_bytes(os.urandom(512 * 1024))
        os.utime(entry, (now - 3600 + 60 * i, now - 3600 + 60 * i))
    os.link(folder / "file-00", sandbox / "input")  # the oldest, but in use
    leftover = folder / ".file-99.4242.123456.tmp"
    leftover.write_bytes(b"half a fetch")
    os.utime(leftover, (now - 3600, now - 3600))
    (folder / ".locks").mkdir(exist_ok=True)
    lock = folder / ".locks" / "file-99"
    lock.touch()
    os.utime(lock, (now - 3600, now - 3600))
    fresh = folder / ".file-98.4243.1.tmp"  # a fetch in progress, written to as we speak: kept
    fresh.write_bytes(b"arriving")
    os.utime(fresh, (now + 600, now + 600))

    kubevine.upgrade({"nodeCache": {"sizeLimit": "2Mi"}})
    try:

        def trimmed() -> bool:
            return (
                sum(p.stat().st_size for p in cached_files(folder)) <= 2 * 1024 * 1024
                and not leftover.exists()
            )

        wait_for(trimmed, timeout=90, interval=0.5, what="the keeper to evict past 2Mi and clear leftovers")
        kept = sorted(p.name for p in cached_files(folder))
        assert "file-00" in kept  # in use: never evicted
        assert "file-05" in kept and "file-01" not in kept  # least recently used went first
        assert not lock.exists() and fresh.exists()
    finally:
        kubevine.upgrade({"nodeCache": {"sizeLimit": "50Gi"}})
        kubevine.wait_ready()
        (sandbox / "input").unlink(missing_ok=True)
        sandbox.rmdir()
