"""A URL's cache name carries its validators (from a HEAD at declare time), so a URL whose
content changed is fetched again and an unchanged one is not."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevine import LocalCluster, Manager, Task


class _Site(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []
    refuse_head = False

    def do_GET(self) -> None:
        type(self).requests.append("GET")
        super().do_GET()

    def do_HEAD(self) -> None:
        type(self).requests.append("HEAD")
        if type(self).refuse_head:
            self.send_error(405)
            return
        super().do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "site"
    root.mkdir()
    _Site.requests, _Site.refuse_head = [], False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Site(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def read(m: Manager, f: object) -> str:
    t = Task("cat data.txt")
    t.add_input(f, "data.txt")  # type: ignore[arg-type]
    m.submit(t)
    assert m.wait(60) is t and t.successful(), (t.outcome, t.error)
    return str(t.output)


def test_a_changed_url_is_fetched_again_and_an_unchanged_one_is_not(tmp_path: Path, site) -> None:
    root, base = site
    (root / "data.txt").write_text("version 1\n")
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        first = m.declare_url(f"{base}/data.txt")
        assert _Site.requests == ["HEAD"]  # declaring asks for validators; it fetches nothing
        assert read(m, first) == "version 1\n"
        again = m.declare_url(f"{base}/data.txt")
        assert again.cache_name() == first.cache_name()
        assert read(m, again) == "version 1\n"
        assert _Site.requests == ["HEAD", "GET", "HEAD"]  # served from the worker's cache
        (root / "data.txt").write_text("version two, longer\n")
        changed = m.declare_url(f"{base}/data.txt")
        assert changed.cache_name() != first.cache_name()
        assert read(m, changed) == "version two, longer\n"  # not the stale copy
        assert _Site.requests == ["HEAD", "GET", "HEAD", "HEAD", "GET"]


def test_a_url_without_validators_is_never_reused(tmp_path: Path, site) -> None:
    root, base = site
    _Site.refuse_head = True
    (root / "data.txt").write_text("one\n")
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        a = m.declare_url(f"{base}/data.txt")
        assert read(m, a) == "one\n"
        (root / "data.txt").write_text("two\n")  # same length, same second: only a fetch can tell
        b = m.declare_url(f"{base}/data.txt")
        assert b.cache_name() != a.cache_name()
        assert read(m, b) == "two\n"
