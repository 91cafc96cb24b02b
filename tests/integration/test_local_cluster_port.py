"""`LocalCluster` chooses its manager's port itself, so that the workers can start with the
manager rather than after it: a port someone takes in between is chosen again, and a port the
user asked for that is taken is a clear error, with nothing left running."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import kubevine.netaddr
from kubevine import LocalCluster, Manager, Task


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_a_port_taken_after_it_was_chosen_is_chosen_again(
    taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = iter([taken])
    real = kubevine.netaddr.free_port
    monkeypatch.setattr(kubevine.netaddr, "free_port", lambda host: next(chosen, None) or real(host))
    with LocalCluster(workers=2, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        assert int(c.address.rsplit(":", 1)[1]) != taken
        assert len(c.workers) == 2 and all(p.poll() is None for p in c.workers)  # the first two are gone
        t = Task("echo ran")
        m.submit(t)
        assert m.wait(30) is t and t.successful() and t.output.strip() == "ran"


def test_a_taken_port_asked_for_is_a_clear_error_and_nothing_is_left_running(
    taken: int, tmp_path: Path
) -> None:
    before = children()
    c = LocalCluster(workers=2, port=taken, workdir=tmp_path / "c")
    with pytest.raises(RuntimeError, match=f"port {taken} is in use"):
        c.start()
    assert all(p.poll() is not None for p in [c.manager, *c.workers] if p is not None)
    assert children() <= before
