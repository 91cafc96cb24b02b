"""Per-source transfer limits: a popular file fans out as a tree (the client's copy travels
once, then peer to peer, each source serving at most N at a time); a peer declared lost
stops holding up the fetches that were waiting on it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import itertools
import os
import signal
import tarfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.ids import CacheName, WorkerId
from kubevine.manager.catalog import BAD_SOURCE, Catalog
from kubevine.protocol import CacheLevel, Outcome
from kubevine.testing import wait_for

MB = 1 << 20


def test_with_one_transfer_per_source_a_file_reaches_five_nodes_as_a_tree(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MB))
    digest = hashlib.md5(big.read_bytes()).hexdigest()
    with LocalCluster(workers=0, workdir=tmp_path / "c", transfers_per_source=1) as c:
        for node in "abcde":
            c.add_worker(cache_dir=str(tmp_path / f"node-{node}"), node=node)
        c.wait_for_workers(5)
        with Manager(c.address, token=c.token) as m:
            f = m.declare_file(big)
            tasks = []
            for _ in range(5):  # each holds its one-core worker long enough for all to get one
                t = Task("sleep 3; md5sum big | cut -d' ' -f1")
                t.add_input(f, "big")
                tasks.append(t)
                m.submit(t)
            for _ in tasks:
                assert m.wait(120) is not None
            assert all(t.successful() for t in tasks), [(t.outcome, t.error) for t in tasks]
            assert {t.output.strip() for t in tasks} == {digest}
            assert len({t.worker for t in tasks}) == 5
    sent = [
        e
        for e in txformat.read(c.workdir / "manager" / "transactions.log")
        if e.kind == "TRANSFER" and e.event == "sent"
    ]
    assert len(sent) == 5  # one arrival per node
    from_manager = [e for e in sent if e.get("source") == "manager"]
    assert len(from_manager) == 1 and int(from_manager[0].num("bytes")) == 20 * MB  # the client's copy, once
    got_from = {e.get("dest"): (e.get("source"), e.get("peer")) for e in sent}
    peer_sources = [p for s, p in got_from.values() if s == "peer"]
    assert len(peer_sources) == 4
    # a chain: some worker served the file it had itself received from a peer
    assert any(got_from[p][0] == "peer" for p in peer_sources)
    # no source ever served two transfers at once
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in sent:
        src = e.get("peer") if e.get("source") == "peer" else "manager"
        spans[src or ""].append((e.time - e.num("seconds"), e.time))
    for src, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"{src} served two transfers at once"


def test_a_fetch_from_a_peer_declared_lost_moves_on_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(2 * MB))
    with LocalCluster(workers=0, workdir=tmp_path / "c", heartbeat_timeout=2.0) as c:
        a = c.add_worker(cache_dir=str(tmp_path / "node-a"), node="a")
        c.wait_for_workers(1)
        with Manager(c.address, token=c.token) as m:
            f = m.declare_file(data)
            first = Task("md5sum data")
            first.add_input(f, "data")
            m.submit(first)
            assert m.wait(60) is first and first.successful()
            blocker = Task("sleep 60")  # keeps a's only core: the next task goes to b
            m.submit(blocker)
            wait_for(lambda: any(w.running for w in m.status().workers), what="the blocker running")
            a.send_signal(signal.SIGSTOP)  # a still looks alive, but will never answer
            try:
                c.add_worker(cache_dir=str(tmp_path / "node-b"), node="b", cores=2)
                c.wait_for_workers(2)
                second = Task("md5sum data")
                second.add_input(f, "data")
                t0 = time.monotonic()
                m.submit(second)
                assert m.wait(60) is second, "the second task should finish"
                elapsed = time.monotonic() - t0
                assert second.successful() and second.output == first.output
                m.cancel_by_task_id(blocker.id or 0)
            finally:
                a.send_signal(signal.SIGKILL)
        assert elapsed < 20, f"took {elapsed:.1f}s: the fetch waited for the silent peer"
    events = [e for e in txformat.read(c.workdir / "manager" / "transactions.log") if e.kind == "TRANSFER"]
    failed = [e for e in events if e.event == "failed" and e.get("dest") == second.worker]
    assert failed and "declared lost" in (failed[0].get("cause") or "")
    assert [e.get("source") for e in events if e.event == "sent" and e.get("dest") == second.worker] == [
        "manager"
    ]


def test_a_source_that_keeps_failing_is_used_only_as_a_last_resort() -> None:
    cat = Catalog(source_limit=2)
    name = CacheName("file-x")
    peers = {WorkerId(w): (f"127.0.0.1:{i}", f"n{i}") for i, w in enumerate(["bad", "good", "d1", "d2"])}
    cat.add(name, WorkerId("bad"), "n0")
    cat.add(name, WorkerId("good"), "n1")
    for _ in range(BAD_SOURCE):
        cat.failed_source("bad")
    stage = cat.plan(name, WorkerId("d1"), "n2", peers, manager_has=True, cache=CacheLevel.WORKFLOW)
    assert stage is not None
    assert [s.worker or s.kind for s in stage.sources] == ["good", "manager", "bad"]
    # the good peer at its limit: wait for it rather than turn to the failing one or the manager
    cat.outgoing["good"] = 2
    assert cat.plan(name, WorkerId("d2"), "n3", peers, manager_has=True, cache=CacheLevel.WORKFLOW) is None


def test_a_failed_fetch_frees_its_source_for_the_next_one(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tools.tar"
    try:
        with (
            LocalCluster(workers=1, workdir=tmp_path / "c", transfers_per_source=1) as c,
            Manager(c.address, token=c.token) as m,
        ):
            first = Task("ls tools")
            first.add_input(m.declare_untar(m.declare_url(url)), "tools")  # not there yet: 404
            m.submit(first)
            assert m.wait(60) is first and first.outcome == Outcome.INPUT_MISSING
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                info = tarfile.TarInfo("hello.txt")
                info.size = 3
                tar.addfile(info, io.BytesIO(b"hi\n"))
            (site / "tools.tar").write_bytes(buf.getvalue())
            second = Task("cat tools/hello.txt")
            second.add_input(m.declare_untar(m.declare_url(url)), "tools")  # the same URL, one slot
            m.submit(second)
            assert m.wait(60) is second and second.output == "hi\n", (second.outcome, second.error)
    finally:
        server.shutdown()
        server.server_close()
