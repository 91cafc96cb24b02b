"""A worker's transfer server: nothing for a peer without the token, an error (never a crash)
for a malformed request, and bounded memory for a peer that asks and never reads."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from kubevine import LocalCluster, Manager, Task, chunks
from kubevine.auth import Credentials
from kubevine.digest import sha256_bytes
from kubevine.ids import CacheName

from .ownworker import OwnWorker, wait_for

BIG = 50 << 20


@pytest.fixture
def served(
    cluster: Callable[..., LocalCluster], tmp_path: Path
) -> Iterator[tuple[LocalCluster, OwnWorker, CacheName]]:
    """A manager, one worker of our own, and a 50 MB buffer in that worker's cache."""
    c = cluster(workers=0)
    w = OwnWorker(c, tmp_path / "w0")
    data = os.urandom(BIG)
    with Manager(c.address, token=c.token) as m:
        f = m.declare_buffer(data)
        t = Task("test -s big && echo ok")
        t.add_input(f, "big")
        m.submit(t)
        assert m.wait(120) is t and t.output == "ok\n", (t.outcome, t.error)
    yield c, w, CacheName("buf-" + sha256_bytes(data))
    w.stop()


def _ask(address: str, frames: list[bytes], timeout: float = 10.0) -> list[bytes] | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{address}")
    try:
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            return None
        return s.recv_multipart()
    finally:
        s.close(0)


def test_a_peer_without_the_token_gets_an_error_and_junk_never_kills_the_worker(
    served: tuple[LocalCluster, OwnWorker, CacheName],
) -> None:
    c, w, name = served
    address = w.transfer_address()
    wrong = Credentials("not the workflow token at all").transfer_proof()
    attempts = [
        [b"get", name.encode()],  # the old request, which needed no token
        [b"get", b"\xff"],  # killed a worker: the name was decoded outside any error handling
        chunks.get_request(wrong, name, 0, chunks.CHUNK),
        chunks.get_request(b"", name, 0, chunks.CHUNK),
        [chunks.GET, Credentials(c.token).transfer_proof(), b"../../etc/passwd", b"\0" * 8, b"\0\0\0\1"],
        [chunks.GET, Credentials(c.token).transfer_proof(), name.encode(), b"x", b"y"],
        [b""],
        [os.urandom(3000)],
    ]
    for frames in attempts:
        reply = _ask(address, frames)
        assert reply is not None and reply[0] == chunks.ERROR_REPLY, (frames[:2], reply and reply[:2])
        assert len(b"".join(reply)) < 5000  # an error, no content
    assert w.alive()
    # whoever holds the token still gets the file, piece by piece
    reply = _ask(address, chunks.get_request(Credentials(c.token).transfer_proof(), name, 0, chunks.CHUNK))
    assert reply is not None
    piece = chunks.parse_reply(reply)
    assert isinstance(piece, chunks.Piece) and piece.total == BIG and len(piece.data) == chunks.CHUNK


def test_a_peer_that_asks_and_never_reads_holds_a_bounded_amount_of_worker_memory(
    served: tuple[LocalCluster, OwnWorker, CacheName],
) -> None:
    c, w, name = served
    address = w.transfer_address()
    proof = Credentials(c.token).transfer_proof()
    before = w.rss()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    greedy: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    greedy.setsockopt(zmq.LINGER, 0)
    greedy.setsockopt(zmq.RCVHWM, 1)  # it reads nothing: what the worker sends stays on its side
    greedy.setsockopt(zmq.RCVBUF, 64 << 10)
    greedy.connect(f"tcp://{address}")
    try:
        for _ in range(40):  # 40 whole-file asks, 2 GB of replies if each were honoured
            greedy.send_multipart([b"get", name.encode()])
            for off in range(0, BIG, chunks.CHUNK):
                greedy.send_multipart(chunks.get_request(proof, name, off, chunks.CHUNK))
        peak = before
        deadline = time.monotonic() + 8.0  # measure while the worker works through 2,040 requests
        while time.monotonic() < deadline:
            peak = max(peak, w.rss())
            time.sleep(0.05)
        assert peak - before < 200 << 20, f"the worker grew by {(peak - before) >> 20} MB"
        # meanwhile a polite peer is served
        reply = _ask(address, chunks.get_request(proof, name, chunks.CHUNK, chunks.CHUNK), timeout=30)
        assert reply is not None and isinstance(chunks.parse_reply(reply), chunks.Piece)
        assert w.alive()
    finally:
        greedy.close(0)
    wait_for(w.alive, 1, "the worker alive")
