"""The hostile-peer tier: real managers and workers, attacked over real sockets.

Every test here plays someone who should not get what they ask for (a peer without the
token, a careless or hostile client with it, a task reading what it must not) and asserts
what they see, then that everyone else is still served. Loops are bounded; nothing sleeps
to synchronise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from kubevine import LocalCluster, Manager, Task
from kubevine.protocol import ANY, PROTOCOL_VERSION, Hello, Message, _Msg, decode, encode


class RawPeer:
    """A DEALER speaking the protocol by hand (so it can say what no kubevine client would)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], address: str) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")

    def send(self, msg: _Msg | list[bytes], frames: list[bytes] | None = None) -> None:
        self.sock.send_multipart(msg if isinstance(msg, list) else encode(msg, frames or []))

    def hello(self, token: str, role: str = "client", client: str = "raw") -> Message:
        self.send(Hello(protocol=PROTOCOL_VERSION, token=token, role=role, client=client))  # type: ignore[arg-type]
        return self.expect("welcome", "refused")

    def expect(self, *types: str, timeout: float = 10.0) -> Message:
        """The next message of one of ``types`` (heartbeats and others skipped), within ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000)):
                break
            msg, _ = decode(self.sock.recv_multipart(), ANY)
            if msg.type in types:
                return msg
        raise AssertionError(f"no {' or '.join(types)} within {timeout}s")

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    started: list[LocalCluster] = []

    def start(**kw: Any) -> LocalCluster:
        kw.setdefault("workdir", tmp_path / f"cluster{len(started)}")
        c = LocalCluster(**kw)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def raw() -> Iterator[Callable[[str], RawPeer]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    peers: list[RawPeer] = []

    def connect(address: str) -> RawPeer:
        p = RawPeer(ctx, address)
        peers.append(p)
        return p

    yield connect
    for p in peers:
        p.close()


def still_serves(c: LocalCluster, workers: int | None = None) -> None:
    """A normal client still gets a task done (and, if given, every worker is still there)."""
    with Manager(c.address, token=c.token) as m:
        t = Task("echo still here")
        m.submit(t)
        assert m.wait(60) is t and t.output == "still here\n", (t.outcome, t.error)
        if workers is not None:
            assert len(m.status().workers) == workers
