"""The data plane with real workers: each byte crosses the network as few times as possible.

Two "nodes" are two cache directories: workers started with the same --cache-dir share it,
as the worker pods of one Kubernetes node share its hostPath.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.testing import wait_for

MB = 1 << 20


def transfers(c: LocalCluster) -> list[txformat.Event]:
    """TRANSFER events of the run (the cluster is stopped first: the log is complete then)."""
    c.stop()
    c_log = c.workdir / "manager" / "transactions.log"
    return [e for e in txformat.read(c_log) if e.kind == "TRANSFER"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(workers=0, workdir=tmp_path / "c", heartbeat_timeout=2.0)
    c.start()
    yield c
    c.stop()


def add_node_workers(c: LocalCluster, tmp_path: Path, nodes: dict[str, int], **kw: object) -> None:
    for node, count in nodes.items():
        for _ in range(count):
            c.add_worker(cache_dir=str(tmp_path / f"node-{node}"), node=node, **kw)  # type: ignore[arg-type]
    c.wait_for_workers(len(c.workers))


def run_all(m: Manager, tasks: list[Task]) -> None:
    for t in tasks:
        m.submit(t)
    while m.wait(120) is not None:
        pass
    bad = [(t.id, t.outcome, t.error) for t in tasks if not t.successful()]
    assert not bad


def test_a_big_input_reaches_each_node_once_and_the_second_node_from_a_peer(cluster, tmp_path: Path) -> None:
    add_node_workers(cluster, tmp_path, {"a": 2, "b": 2})
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 * MB))
    digest = hashlib.md5(big.read_bytes()).hexdigest()
    with Manager(cluster.address, token=cluster.token) as m:
        f = m.declare_file(big)
        tasks = []
        for _ in range(100):
            t = Task("sleep 0.1; md5sum big | cut -d' ' -f1")  # long enough for every worker to get work
            t.add_input(f, "big")
            tasks.append(t)
        run_all(m, tasks)
        assert {t.output.strip() for t in tasks} == {digest}
        assert {t.worker for t in tasks} and len({t.worker for t in tasks}) == 4
        groups = {w.id: w.node for w in m.status().workers}
    sent = [e for e in transfers(cluster) if e.event == "sent"]
    assert [e.get("source") for e in sent if e.get("source") == "manager"] == [
        "manager"
    ]  # client→manager→once
    assert sum(int(e.num("bytes")) for e in sent if e.get("source") == "manager") == 50 * MB
    arrivals = {groups[e.get("dest") or ""] for e in sent}
    assert len(sent) == 2 and arrivals == {"a", "b"}  # one arrival per node, nothing more
    from_peer = [e for e in sent if e.get("source") == "peer"]
    assert (
        len(from_peer) == 1
        and groups[from_peer[0].get("peer") or ""] != groups[from_peer[0].get("dest") or ""]
    )


class _Counting(http.server.SimpleHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def test_a_url_input_is_fetched_by_a_worker_once_per_node(cluster, tmp_path: Path) -> None:
    add_node_workers(cluster, tmp_path, {"a": 2, "b": 2})
    site = tmp_path / "site"
    site.mkdir()
    (site / "data.txt").write_text("served over http\n" * 1000)
    _Counting.hits = []
    handler = lambda *a: _Counting(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Manager(cluster.address, token=cluster.token) as m:
            url = m.declare_url(f"http://127.0.0.1:{server.server_address[1]}/data.txt")
            tasks = []
            for _ in range(40):
                t = Task("wc -l < data.txt")
                t.add_input(url, "data.txt")
                tasks.append(t)
            run_all(m, tasks)
        assert {t.output for t in tasks} == {"1000\n"}
        assert len(_Counting.hits) <= 2  # once per node at most: the rest came from peers or the node
        sources = {e.get("source") for e in transfers(cluster) if e.event == "sent"}
        assert "manager" not in sources  # the manager never fetched or sent it
    finally:
        server.shutdown()


def test_a_lost_temp_is_regenerated_by_rerunning_its_producer(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=2, workdir=tmp_path / "c", heartbeat_timeout=2.0) as c,
        Manager(c.address, token=c.token) as m,
    ):
        tmp = m.declare_temp()
        a = Task("seq 1 1000 > numbers; echo made")
        a.add_output(tmp, "numbers")
        m.submit(a)
        assert m.wait(60) is a and a.successful()
        victim = next(p for p in c.workers if f"-{p.pid}-" in (a.worker or ""))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_for(lambda: len(m.status().workers) == 1, timeout=30, what="the worker to be declared lost")
        b = Task("awk '{s+=$1} END {print s}' numbers")
        b.add_input(tmp, "numbers")
        m.submit(b)
        assert m.wait(60) is b, "the consumer should run once its input is made again"
        assert b.successful() and b.output == "500500\n"
    log = txformat.read(c.workdir / "manager" / "transactions.log")
    regen = [e for e in log if e.kind == "TASK" and e.event == "regenerate"]
    assert [e.subject for e in regen] == [str(a.id)], [
        (e.subject, e.event, e.fields.get("cause"))
        for e in log
        if e.kind == "TASK" and e.event in ("regenerate", "ready", "done")
    ]


def test_a_corrupted_cache_file_is_detected_and_fetched_again(tmp_path: Path) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        data = tmp_path / "data"
        data.write_bytes(b"precious bytes\n" * 10000)
        f = m.declare_file(data)
        first = Task("md5sum data")
        first.add_input(f, "data")
        run_all(m, [first])
        cached = c.workdir / "worker-0" / "cache" / f.cache_name()
        cached.write_bytes(b"garbage")  # the disk lies
        second = Task("md5sum data")
        second.add_input(f, "data")
        run_all(m, [second])
        assert second.output == first.output
    sent = [e for e in transfers(c) if e.event == "sent"]
    assert len(sent) == 2  # fetched again, not served corrupt


def test_a_truncated_peer_copy_is_refused_and_fetched_from_another_source(cluster, tmp_path: Path) -> None:
    add_node_workers(cluster, tmp_path, {"a": 1})
    data = tmp_path / "data"
    data.write_bytes(os.urandom(2 * MB))
    with Manager(cluster.address, token=cluster.token) as m:
        f = m.declare_file(data)
        first = Task("md5sum data")
        first.add_input(f, "data")
        run_all(m, [first])
        copy = tmp_path / "node-a" / f.cache_name()
        with open(copy, "r+b") as fh:
            fh.truncate(MB)  # the only peer copy is now half a file
        add_node_workers(cluster, tmp_path, {"b": 1})
        blocker = Task("sleep 3")
        m.submit(blocker)  # keeps worker a busy, so the next task goes to b
        wait_for(lambda: any(w.running for w in m.status().workers), what="the blocker running")
        second = Task("md5sum data")
        second.add_input(f, "data")
        run_all(m, [second])
        assert second.output == first.output
        while m.wait(30):
            pass
    events = transfers(cluster)
    failed = [e for e in events if e.event == "failed"]
    assert failed and failed[0].get("source") == "peer"
    last = [e for e in events if e.event == "sent"][-1]
    assert last.get("source") == "manager" and last.get("dest") == second.worker


def test_a_small_cache_evicts_least_recently_used_files_and_tasks_still_succeed(tmp_path: Path) -> None:
    with LocalCluster(workers=1, disk=3, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        files = []
        for i in range(8):
            p = tmp_path / f"in{i}"
            p.write_bytes(bytes([i]) * MB)
            files.append(m.declare_file(p))
        tasks = []
        for i, f in enumerate(files * 2):
            t = Task(f"test $(wc -c < in) -eq {MB} && echo {i}")
            t.add_input(f, "in")
            tasks.append(t)
        for t in tasks:
            m.submit(t)
            assert m.wait(60) is t and t.successful(), (t.outcome, t.error)
        cache = c.workdir / "worker-0" / "cache"
        held = sum(p.stat().st_size for p in cache.iterdir() if not p.name.startswith("."))
        assert held <= 3 * MB
    log = txformat.read(c.workdir / "manager" / "transactions.log")
    assert [e for e in log if e.kind == "CACHE" and e.event == "evict"]


def test_two_workers_racing_for_one_file_in_a_shared_cache_fetch_it_once(cluster, tmp_path: Path) -> None:
    add_node_workers(cluster, tmp_path, {"a": 2})
    data = tmp_path / "data"
    data.write_bytes(os.urandom(8 * MB))
    with Manager(cluster.address, token=cluster.token) as m:
        f = m.declare_file(data)
        tasks = []
        for _ in range(2):
            t = Task("sleep 0.2; md5sum data")
            t.add_input(f, "data")
            tasks.append(t)
        run_all(m, tasks)
        assert len({t.worker for t in tasks}) == 2 and len({t.output for t in tasks}) == 1
    assert len([e for e in transfers(cluster) if e.event == "sent"]) == 1
