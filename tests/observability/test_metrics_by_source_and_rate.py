"""``/metrics`` of a real manager counts transfers by where the bytes came from, and shows
dispatch and completion rates while tasks run.

Two workers on two "nodes" (two cache directories) run tasks that read a buffer (sent by
the manager), a URL (fetched by a worker from a web server) — and whatever one node already
holds reaches the other from a peer. The metrics must agree, source by source, with the
transactions log's TRANSFER lines, which name the source of every file that arrived.
"""

from __future__ import annotations

import http.server
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubevine import LocalCluster, Manager, Task, txformat

from .helpers import http_get, metrics_address

SOURCES = ("manager", "peer", "url")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(url: str) -> Samples:
    out: Samples = {}
    status, text = http_get(url)
    assert status == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "workflow"))
            out[(s.name, labels)] = s.value
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "table.csv").write_text("a,b\n" * 5000)  # 20 kB
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/table.csv"
    server.shutdown()
    server.server_close()


def test_transfers_and_bytes_by_source_match_the_transactions_log_and_rates_show_the_run(
    observed_cluster: Callable[..., LocalCluster], tmp_path: Path, web: str
) -> None:
    c = observed_cluster(workers=0)
    for node in ("a", "b"):
        c.add_worker(cache_dir=str(tmp_path / f"node-{node}"), node=node)
    c.wait_for_workers(2)
    url = f"http://{metrics_address(c)}/metrics"
    rates: list[tuple[float, float]] = []
    n = 40
    with Manager(c.address, token=c.token) as m:
        buffer = m.declare_buffer(b"x" * 30_000)
        table = m.declare_url(web)
        for _ in range(n):
            t = Task("sleep 0.1; wc -c < buf; wc -l < table.csv")  # long enough for both workers to get work
            t.add_input(buffer, "buf")
            t.add_input(table, "table.csv")
            m.submit(t)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} tasks came back"
            t = m.wait(0.05)
            if t is not None:
                got.append(t)
            s = samples(url)
            rates.append((s[("kubevine_dispatch_rate", ())], s[("kubevine_complete_rate", ())]))
        assert all(t.successful() and t.output == "30000\n5000\n" for t in got), [t.error for t in got][:3]
        assert len({t.worker for t in got}) == 2  # both nodes worked
        deadline = time.monotonic() + 10  # the snapshot after the last task counts everything
        while (s := samples(url))[("kubevine_tasks_completed_total", ())] < n:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert max(d for d, _ in rates) > 0 and max(c_ for _, c_ in rates) > 0, "the rates never moved"
    assert all(math.isfinite(d) and math.isfinite(c_) and d >= 0 and c_ >= 0 for d, c_ in rates)

    c.stop()  # the transactions log is complete once the manager has stopped
    sent = [e for e in txformat.read(c.workdir / "manager" / "transactions.log") if e.kind == "TRANSFER"]
    sent = [e for e in sent if e.event == "sent"]
    for source in SOURCES:
        in_log = [e for e in sent if e.get("source") == source]
        assert s[("kubevine_transfers_total", (("source", source),))] == len(in_log), source
        assert s[("kubevine_transfer_bytes_total", (("source", source),))] == sum(
            int(e.num("bytes")) for e in in_log
        ), source
    by_source = {src: s[("kubevine_transfers_total", (("source", src),))] for src in SOURCES}
    assert by_source["manager"] >= 1  # the buffer, from the manager
    assert by_source["url"] >= 1  # the table, from the web server
    assert by_source["peer"] >= 1  # something one node had reached the other from it
    assert sum(by_source.values()) == 4  # two files, one arrival on each node
