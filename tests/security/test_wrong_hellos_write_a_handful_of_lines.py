"""A stranger hammering the manager's port cannot fill its log.

Each wrong hello is still refused, and each malformed message still answered, but the
warnings they cause are throttled per peer address: one line a minute, and a count of what
was left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from kubevine import LocalCluster
from kubevine.protocol import PROTOCOL_VERSION, Hello, decode, encode

from .conftest import still_serves

N = 10_000


def drain(s: zmq.Socket[bytes], n: int, kind: str) -> None:
    """Read ``n`` answers of type ``kind`` (each message was answered)."""
    got = 0
    deadline = time.monotonic() + 60
    while got < n:
        assert s.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"{got} of {n} answered"
        msg, _ = decode(s.recv_multipart())
        got += msg.type == kind


def lines(c: LocalCluster, text: str) -> int:
    return sum(text in line for line in (c.workdir / "manager" / "manager.log").read_text().splitlines())


def test_ten_thousand_wrong_hellos_and_junk_write_a_handful_of_warnings(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=1)
    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{c.address}")
    try:
        wrong = encode(Hello(protocol=PROTOCOL_VERSION, token="x" * 43, role="client"))
        for _ in range(N):
            s.send_multipart(wrong)
        drain(s, N, "refused")
        for _ in range(N):
            s.send_multipart([b"not json at all"])
        drain(s, N, "error")
    finally:
        s.close()
    deadline = time.monotonic() + 10  # the count of what was left out follows within a tick
    while lines(c, "were not logged") < 1:
        assert time.monotonic() < deadline, (c.workdir / "manager" / "manager.log").read_text()[-3000:]
        time.sleep(0.1)
    refused, malformed = lines(c, "refused a client connection"), lines(c, "malformed message from")
    assert 1 <= refused <= 3 and 1 <= malformed <= 3, (refused, malformed)
    total = len((c.workdir / "manager" / "manager.log").read_text().splitlines())
    assert total < 50, f"{total} lines in the manager's log"
    still_serves(c, workers=1)
