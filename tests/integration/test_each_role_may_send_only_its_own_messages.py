"""The manager reads a peer's message as what the peer's role may send: a worker, a client and
an admin session each get ``unexpected`` for another role's message (its body never read) and
nothing else changes; a peer that has not said hello may only say hello."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from kubevine import LocalCluster, Manager, Task
from kubevine.ids import WorkerId
from kubevine.protocol import (
    ANY,
    PROTOCOL_VERSION,
    DrainWorkers,
    Goodbye,
    Heartbeat,
    Hello,
    Kill,
    Message,
    Results,
    StatusReply,
    StatusRequest,
    Submit,
    TaskSpec,
    WorkerInfo,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
)
from kubevine.resources import Resources


class Peer:
    def __init__(self, address: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")

    def send(self, msg: _Msg | list[bytes]) -> None:
        self.sock.send_multipart(msg if isinstance(msg, list) else encode(msg))

    def expect(self, *types: str, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and self.sock.poll(int(left * 1000)):
            msg, _ = decode(self.sock.recv_multipart(), ANY)
            if msg.type in types:
                return msg
        raise AssertionError(f"no {' or '.join(types)} within {timeout}s")


@pytest.fixture
def peer() -> Iterator[Callable[[str], Peer]]:
    made: list[Peer] = []

    def connect(address: str) -> Peer:
        made.append(Peer(address))
        return made[-1]

    yield connect
    for p in made:
        p.sock.close(0)


def hello(p: Peer, token: str, role: str, **kw: object) -> None:
    p.send(Hello(protocol=PROTOCOL_VERSION, token=token, role=role, **kw))  # type: ignore[arg-type]
    assert p.expect("welcome", "refused").type == "welcome"


def unexpected(p: Peer, role: str, tag: str) -> None:
    err = p.expect("error")
    assert err.type == "error" and err.code == "unexpected", err
    assert err.message == f"{role}s do not send {tag}"


SUBMIT = Submit(tasks=[TaskSpec(id=1, command="touch /tmp/must-not-run")])  # type: ignore[list-item]


def test_each_role_gets_unexpected_for_another_role_s_message(
    cluster: Callable[..., LocalCluster], peer: Callable[[str], Peer]
) -> None:
    c = cluster(workers=1)
    worker = peer(c.address)
    info = WorkerInfo(worker_id=WorkerId("raw-w"), node="n", host="h", pid=1, resources=Resources(cores=1))
    hello(worker, c.token, "worker", worker=info)
    worker.send(SUBMIT)
    unexpected(worker, "worker", "submit")
    worker.send(StatusRequest())
    unexpected(worker, "worker", "status_request")
    worker.send(Goodbye(reason="done here"))  # it runs nothing: let no task wait for it

    client = peer(c.address)
    hello(client, c.token, "client", client="raw-c")
    client.send(WorkerUpdate())
    unexpected(client, "client", "worker_update")
    client.send(DrainWorkers(worker_ids=[WorkerId("raw-w")]))
    unexpected(client, "client", "drain_workers")
    # a body that would not even parse is refused by its type alone
    client.send([b'{"type": "worker_update", "results": "not a list"}'])
    unexpected(client, "client", "worker_update")

    admin = peer(c.address)
    hello(admin, c.token, "admin")
    admin.send(SUBMIT)
    unexpected(admin, "admin", "submit")
    admin.send(StatusRequest())
    st = admin.expect("status_reply")
    assert isinstance(st, StatusReply) and '"submitted":0' in st.status.replace(" ", "")

    with Manager(c.address, token=c.token) as m:  # everyone else is served as before
        t = Task("echo still here")
        m.submit(t)
        assert m.wait(30) is t and t.output == "still here\n"
        assert len(m.status().workers) == 1 and m.status().totals["submitted"] == 1


def test_a_peer_that_said_no_hello_may_only_say_hello(
    cluster: Callable[..., LocalCluster], peer: Callable[[str], Peer]
) -> None:
    c = cluster(workers=1)
    stranger = peer(c.address)
    for msg in (Heartbeat(), StatusRequest(), WorkerUpdate(), Kill(tasks=[]), Results(results=[])):
        stranger.send(msg)
        err = stranger.expect("error")
        assert err.type == "error" and err.code == "not_registered", msg
    hello(stranger, c.token, "client", client="late")  # and the manager still answers
