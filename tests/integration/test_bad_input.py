"""Bad input gets a clear error to whoever sent it; the manager keeps serving everyone else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from kubevine import ConnectionRefused, LocalCluster, Manager, Task
from kubevine.protocol import PROTOCOL_VERSION, FileBinding, FileKind, Hello, Submit, TaskSpec, decode, encode


@pytest.fixture
def raw() -> Iterator[object]:
    ctx = zmq.Context.instance()
    socks: list[zmq.Socket[bytes]] = []

    def connect(address: str) -> zmq.Socket[bytes]:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 10000)
        s.connect(f"tcp://{address}")
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close(0)


def still_serves(c: LocalCluster) -> None:
    with Manager(c.address, token=c.token) as m:
        t = Task("echo still here")
        m.submit(t)
        assert m.wait(30) is t and t.output == "still here\n"


def test_a_malformed_message_gets_an_error_back(cluster, raw) -> None:
    c = cluster(workers=1)
    s = raw(c.address)
    for junk in (
        [b"not json at all"],
        [b'{"type": "no-such-type"}'],
        [b'{"type": "submit", "tasks": "x"}'],
        [b'\x00{"type": "heartbeat"}', b"\xc1 not msgpack"],  # packed frames that do not unpack
        [b'\x00{"type": "heartbeat"}', msgpack.packb([1, 2])],  # ... or are not byte strings
        [b'\x00{"type": "heartbeat"}', msgpack.packb([b"a"]), b"extra"],
    ):
        s.send_multipart(junk)
        msg, _ = decode(s.recv_multipart())
        assert msg.type == "error" and msg.code == "malformed", msg
        assert "malformed message" in msg.message
    still_serves(c)


def test_a_wrong_token_is_refused_and_logged(cluster, tmp_path: Path) -> None:
    c = cluster(workers=1)
    with pytest.raises(ConnectionRefused, match="invalid token"):
        Manager(c.address, token="not-the-token")
    still_serves(c)
    log = (c.workdir / "manager" / "manager.log").read_text()
    assert "wrong or missing token" in log and "not-the-token" not in log


def test_a_wrong_protocol_version_names_both_versions(cluster, raw) -> None:
    c = cluster(workers=1)
    s = raw(c.address)
    s.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION + 41, token=c.token, role="client")))
    msg, _ = decode(s.recv_multipart())
    assert msg.type == "refused"
    assert (
        f"peer speaks {PROTOCOL_VERSION + 41}" in msg.reason
        and f"manager speaks {PROTOCOL_VERSION}" in msg.reason
    )
    still_serves(c)


def test_messages_before_hello_are_answered_not_obeyed(cluster, raw) -> None:
    c = cluster(workers=1)
    s = raw(c.address)
    s.send_multipart(encode(Submit(tasks=[TaskSpec(id=1, command="touch /tmp/should-not-run")])))  # type: ignore[arg-type]
    msg, _ = decode(s.recv_multipart())
    assert msg.type == "error" and msg.code == "not_registered"


def test_a_missing_input_file_comes_back_as_input_missing(cluster, client, tmp_path: Path) -> None:
    """As in TaskVine: submit does not raise; the task returns from wait with result "input
    missing", exit code -1 and the path in its error; the next task runs."""
    m = client(cluster(workers=1))
    t = Task("cat x")
    t.add_input(m.declare_file(tmp_path / "does-not-exist.txt"), "x")
    assert isinstance(m.submit(t), int)
    ok = Task("echo fine")
    m.submit(ok)
    assert m.wait(30) is t
    assert t.result == "input missing" and t.exit_code == -1 and "does-not-exist.txt" in (t.error or "")
    assert m.wait(30) is ok and ok.successful()


def test_an_input_the_manager_never_got_fails_that_task_only(cluster, raw) -> None:
    c = cluster(workers=1)
    s = raw(c.address)
    s.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION, token=c.token, role="client", client="raw")))
    welcome, _ = decode(s.recv_multipart())
    first = welcome.first_task_id
    ghost = FileBinding(cache_name="file-0000", remote_name="ghost", kind=FileKind.LOCAL)
    s.send_multipart(
        encode(
            Submit(
                tasks=[
                    TaskSpec(id=first, command="cat ghost", inputs=[ghost]),
                    TaskSpec(id=first + 1, command="echo ok"),
                ]
            )
        )
    )
    got = {}
    while len(got) < 2:
        msg, frames = decode(s.recv_multipart())
        if msg.type == "results":
            for r in msg.results:
                got[r.task_id] = (
                    r.state,
                    r.outcome,
                    r.error,
                    frames[r.output_frame] if r.output_frame is not None else None,
                )
    assert got[first][:2] == ("failed", "input_missing") and "ghost" in got[first][2]
    assert got[first + 1][0] == "done" and got[first + 1][3] == b"ok\n"


def test_a_frame_index_out_of_range_is_malformed(cluster, raw) -> None:
    c = cluster(workers=1)
    s = raw(c.address)
    s.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION, token=c.token, role="client", client="raw2")))
    decode(s.recv_multipart())
    bad = json.dumps({"type": "put_files", "files": [{"cache_name": "buf-x", "size": 3, "frame": 5}]})
    s.send_multipart([bad.encode()])
    msg, _ = decode(s.recv_multipart())
    while msg.type == "heartbeat":
        msg, _ = decode(s.recv_multipart())
    assert msg.type == "error" and "out of range" in msg.message
    still_serves(c)
