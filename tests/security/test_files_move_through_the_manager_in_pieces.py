"""Files pass through the manager a bounded piece at a time, and are used only when sound.

A client's upload is assembled from its pieces in any order and becomes available only when
it is whole and its content is what its name promises; a task that reads it waits meanwhile,
and fails with the reason if it never comes right. Workers and clients get files back in
pieces too; a file only a worker holds is pulled once into the manager's spool and every
piece of it served from there.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from kubevine import LocalCluster, Manager, Task
from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.protocol import (
    MAX_PIECE,
    PROTOCOL_VERSION,
    TO_CLIENT,
    TO_WORKER,
    FetchedFile,
    FetchFile,
    FileBinding,
    FileData,
    FileKind,
    FileMeta,
    FileRequest,
    Hello,
    PieceRef,
    PutFiles,
    Results,
    StatusReply,
    StatusRequest,
    Submit,
    TaskSpec,
    Welcome,
    WorkerInfo,
    _Msg,
    decode,
    encode,
)
from kubevine.resources import Resources
from kubevine.stats import ManagerStatus

MB = 1 << 20


class Peer:
    """A DEALER that speaks the protocol by hand and keeps the frames of what it reads."""

    def __init__(self, address: str, direction: object = TO_CLIENT) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")
        self.direction = direction

    def send(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        self.sock.send_multipart(encode(msg, frames or []))

    def read(self, kind: type[_Msg], timeout: float = 30.0) -> tuple[_Msg, list[bytes]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000)):
                break
            msg, frames = decode(self.sock.recv_multipart(), self.direction)  # type: ignore[call-overload]
            if isinstance(msg, kind) or msg.type == "error":
                return msg, frames
        raise AssertionError(f"no {kind.__name__} within {timeout}s")

    def close(self) -> None:
        self.sock.close(0)


def client(address: str, token: str, name: str) -> Peer:
    p = Peer(address)
    p.send(Hello(protocol=PROTOCOL_VERSION, token=token, role="client", client=ClientId(name)))
    welcome, _ = p.read(Welcome)
    assert welcome.type == "welcome", welcome
    return p


def pieces(name: CacheName, data: bytes) -> list[tuple[FileMeta, bytes]]:
    return [
        (
            FileMeta(cache_name=name, size=len(data[o : o + MAX_PIECE]), frame=0, offset=o, total=len(data)),
            data[o : o + MAX_PIECE],
        )
        for o in range(0, len(data), MAX_PIECE)
    ]


def put(p: Peer, meta: FileMeta, data: bytes) -> None:
    p.send(PutFiles(files=[meta]), [data])


def status(p: Peer) -> ManagerStatus:
    p.send(StatusRequest())
    reply, _ = p.read(StatusReply)
    assert isinstance(reply, StatusReply)
    return ManagerStatus.model_validate_json(reply.status)


def reads(tid: int, name: CacheName, command: str = "sha256sum < in") -> Submit:
    binding = FileBinding(cache_name=name, remote_name="in", kind=FileKind.BUFFER)
    return Submit(tasks=[TaskSpec(id=TaskId(tid), command=command, inputs=[binding])])


def test_an_upload_in_pieces_is_used_only_once_it_is_whole(cluster: Callable[..., LocalCluster]) -> None:
    c = cluster(workers=1)
    data = os.urandom(2 * MB + 12345)
    digest = hashlib.sha256(data).hexdigest()
    name = CacheName(f"buf-{digest}")
    p = client(c.address, c.token, "uploader")
    try:
        parts = pieces(name, data)
        assert len(parts) == 3
        put(p, *parts[2])  # out of order, and one piece still missing
        put(p, *parts[0])
        p.send(reads(1_000_001, name))
        deadline = time.monotonic() + 10
        while status(p).tasks.get("waiting") != 1:  # it waits for the file, it does not fail
            assert time.monotonic() < deadline
        assert not (c.workdir / "manager" / "files" / name).exists()
        put(p, *parts[1])
        msg, frames = p.read(Results)
        assert isinstance(msg, Results), msg
        (r,) = msg.results
        assert r.state == "done", r
        assert frames[r.output_frame or 0].split()[0].decode() == digest
        assert (c.workdir / "manager" / "files" / name).stat().st_size == len(data)
    finally:
        p.close()


def test_an_upload_that_is_not_what_its_name_says_is_refused_and_its_task_fails(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=1)
    data = os.urandom(MB + 1)
    name = CacheName(f"buf-{hashlib.sha256(b'something else').hexdigest()}")
    p = client(c.address, c.token, "liar")
    try:
        parts = pieces(name, data)
        put(p, *parts[0])
        p.send(reads(1_000_001, name))
        put(p, *parts[1])
        err, _ = p.read(Results)
        assert err.type == "error" and err.code == "bad_file" and "not what its name says" in err.message  # type: ignore[union-attr]
        res, _ = p.read(Results)
        assert isinstance(res, Results), res
        (r,) = res.results
        assert (
            r.state == "failed"
            and r.outcome == "input_missing"
            and "not what its name says" in (r.error or "")
        )
        assert not (c.workdir / "manager" / "files" / name).exists()
    finally:
        p.close()


def test_a_worker_gets_a_client_file_in_pieces(cluster: Callable[..., LocalCluster]) -> None:
    c = cluster(workers=0)
    data = os.urandom(2 * MB + 7)
    name = CacheName(f"buf-{hashlib.sha256(data).hexdigest()}")
    up = client(c.address, c.token, "sender")
    w = Peer(c.address, TO_WORKER)
    try:
        for meta, piece in pieces(name, data):
            put(up, meta, piece)
        info = WorkerInfo(
            worker_id=WorkerId("raw-worker"), node="n", host="h", pid=1, resources=Resources(cores=1)
        )
        w.send(Hello(protocol=PROTOCOL_VERSION, token=c.token, role="worker", worker=info))
        assert w.read(Welcome)[0].type == "welcome"
        deadline = time.monotonic() + 10
        got = b""
        while len(got) < len(data):  # the upload may still be finishing: ask until it is there
            w.send(
                FileRequest(
                    pieces=[PieceRef(cache_name=name, offset=o) for o in range(0, len(data), MAX_PIECE)]
                )
            )
            got = bytearray(len(data))
            for _ in range(3):
                msg, frames = w.read(FileData)
                assert isinstance(msg, FileData), msg
                if msg.error is not None:
                    assert "has no file" in msg.error and time.monotonic() < deadline, msg.error
                    got = b""
                    continue
                assert msg.total == len(data) and len(frames[0]) <= MAX_PIECE
                got[msg.offset : msg.offset + len(frames[0])] = frames[0]
        assert bytes(got) == data
        w.send(FileRequest(cache_names=[name]))  # the whole-file form still works
        msg, frames = w.read(FileData)
        assert isinstance(msg, FileData) and msg.total is None and frames[0] == data
    finally:
        up.close()
        w.close()


def fetch_in_pieces(p: Peer, name: CacheName, request: int) -> tuple[bytes, str | None]:
    got = bytearray()
    total = None
    while total is None or len(got) < total:
        p.send(FetchFile(request=request, cache_name=name, offset=len(got), length=MAX_PIECE))
        msg, frames = p.read(FetchedFile, timeout=60)
        assert isinstance(msg, FetchedFile) and msg.error is None, msg
        assert msg.offset == len(got) and len(frames[0]) <= MAX_PIECE
        total = msg.total
        got += frames[0]
    return bytes(got), msg.source


def test_a_file_only_a_worker_holds_is_spooled_once_and_served_in_pieces(
    cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    c = cluster(workers=1)
    with Manager(c.address, token=c.token) as m:
        temp = m.declare_temp()
        t = Task("head -c 3500000 /dev/urandom > out")
        t.add_output(temp, "out")
        m.submit(t)
        assert m.wait(60) is t and t.successful(), t.error
        whole = m.fetch_bytes(temp)  # the client's own way (whole, for now)
        name = temp.cache_name()
    p = client(c.address, c.token, "fetcher")
    try:
        got, source = fetch_in_pieces(p, name, 1)
        assert got == whole and len(got) == 3_500_000
        assert source is not None and source != "manager"  # it came from the worker
        spool = c.workdir / "manager" / "files" / ".spool"
        assert [f for f in spool.iterdir() if f.name.startswith(name)], list(spool.iterdir())
        for w in c.workers:  # the worker goes: the spool still serves every piece
            w.kill()
            w.wait()
        again, _ = fetch_in_pieces(p, name, 2)
        assert again == whole
    finally:
        p.close()
