"""Bounded fuzzing while a real workload runs: nothing dies, every result is right.

Random and mutated frames go to every socket a kubevine process listens or answers on:

* the manager, as a peer that never said hello, as a client with the token, and as a worker
  with the token (one that offers no cores, so no real task is given to it);
* a worker's transfer server (the port its process listens on);
* a worker's own connection: a second worker is pointed at a fake manager that welcomes it
  and then sends it mutated manager-to-worker messages.

Meanwhile a client runs commands, function calls, a temp file passed between tasks and a
buffer input on two real workers. The test passes when every fuzzed process is still alive
(the fake manager's worker still heartbeats) and every task of the workload succeeded with the
right output. ``KUBEVINE_FUZZ_FRAMES`` sets the frames per target (the suite sends 2,000 each;
``make fuzz`` sends 25,000 each, 100,000 in all, and prints the counts).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq

import kubevine as vine
from kubevine.protocol import (
    PROTOCOL_VERSION,
    Dispatch,
    FileData,
    ForgetFiles,
    Heartbeat,
    Hello,
    InstallLibrary,
    Kill,
    LibrarySpec,
    PutFiles,
    StatusRequest,
    Submit,
    TaskSpec,
    UpdateAck,
    Welcome,
    WorkerInfo,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
)
from kubevine.resources import Resources
from kubevine.testing import wait_for

FRAMES = int(os.environ.get("KUBEVINE_FUZZ_FRAMES", "2000"))
SEED = int(os.environ.get("KUBEVINE_FUZZ_SEED", "20261205"))


def inc(x: int) -> int:
    return x + 1


# --------------------------------------------------------------------------- frames


def _samples() -> list[_Msg]:
    """Well-formed messages of every direction: the starting points of mutations."""
    spec = TaskSpec(id=1, command="true")
    return [
        Hello(protocol=PROTOCOL_VERSION, token="x" * 20, role="client", client="c"),
        Heartbeat(),
        Submit(tasks=[spec]),
        PutFiles(files=[]),
        WorkerUpdate(),
        Dispatch(tasks=[]),
        Kill(tasks=[]),
        UpdateAck(tasks=[]),
        ForgetFiles(cache_names=["buf-1"]),
        FileData(cache_name="buf-1", error="x"),
        InstallLibrary(spec=LibrarySpec(name="l", functions=["f"])),
        Welcome(workflow="w", manager_id="m", heartbeat_interval=1, heartbeat_timeout=30),
    ]


def mutations(rng: random.Random) -> Iterator[list[bytes]]:
    samples = [encode(m) for m in _samples()]
    junk = [b"", b"\x00", b"\xff" * 9, b"{", b"[]", b"null", b'{"type": 1}', b'{"type": "submit"}']
    while True:
        kind = rng.randrange(8)
        base = list(rng.choice(samples))
        if kind == 0:  # random bytes
            yield [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
        elif kind == 1:  # a flipped byte in the header
            head = bytearray(base[0])
            if head:
                head[rng.randrange(len(head))] ^= 1 << rng.randrange(8)
            yield [bytes(head), *base[1:]]
        elif kind == 2:  # truncated
            yield [base[0][: rng.randrange(len(base[0]) + 1)], *base[1:]]
        elif kind == 3:  # extra frames, or frame indices pointing nowhere
            yield [*base, *(rng.randbytes(8) for _ in range(rng.randrange(1, 5)))]
        elif kind == 4:  # a field of the wrong type or value
            try:
                obj = json.loads(base[0].lstrip(b"\x00"))
            except ValueError:
                obj = {"type": "heartbeat"}
            key = rng.choice([*obj.keys(), "frame", "tasks", "cache_names", "files"])
            obj[key] = rng.choice([None, -1, 2**63, "x" * 300, "../../etc", [1, [2]], {"a": 1}, "\x00"])
            yield [json.dumps(obj).encode()]
        elif kind == 5:  # packed frames that do not unpack, or unpack to the wrong things
            yield [b"\x00" + base[0], rng.choice([b"\xc1", msgpack.packb([1, 2]), msgpack.packb("x")])]
        elif kind == 6:
            yield [rng.choice(junk)]
        else:  # the transfer server's wire, broken
            yield [
                rng.choice([b"get", b"kv-get/2", b"\xff"]),
                *(rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(0, 6))),
            ]


def blast(sock: zmq.Socket[bytes], n: int, rng: random.Random, sentinel: list[bytes], answer: bytes) -> int:
    """Send ``n`` fuzzed messages (reading whatever comes back, so no queue fills), then a
    ``sentinel`` whose answer contains ``answer``: once it is back, every message before it was
    read and handled by the other end (a peer's messages are handled in order)."""
    sent = 0
    for parts in mutations(rng):
        if sent >= n:
            break
        sock.send_multipart(parts)  # blocking (SNDTIMEO bounds it): each one reaches the wire
        sent += 1
        while sock.poll(0):
            sock.recv_multipart()
    # Asked again every 5 s, as a real peer does: a transfer server drops a reply its peer's
    # queue has no room for (the peer asks again), and a fuzzer reading between sends can
    # have a full queue at the moment the sentinel's answer is sent.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sock.send_multipart(sentinel)
        asked = time.monotonic()
        while time.monotonic() - asked < 5:
            if sock.poll(1000) and answer in b"".join(sock.recv_multipart()):
                return sent
    raise AssertionError(f"no answer to the sentinel after {sent} fuzzed messages: the peer stopped reading")


# --------------------------------------------------------------------------- the workload


def workload(m: vine.Manager, tmp: Path) -> Callable[[], None]:
    """Submit a mixed workload now; the returned check waits for it and asserts every result."""
    m.install_library(m.create_library_from_functions("fuzzlib", inc, exec_mode="direct"))
    cmds = [vine.Task(f"echo {i}") for i in range(60)]
    calls = [vine.FunctionCall("fuzzlib", "inc", i) for i in range(60)]
    temp = m.declare_temp()
    make = vine.Task("seq 1 1000 > t")
    make.add_output(temp, "t")
    use = vine.Task("wc -l < t")
    use.add_input(temp, "t")
    buf = vine.Task("cat b")
    buf.add_input(m.declare_buffer(b"buffered\n"), "b")
    every = [*cmds, *calls, make, use, buf]
    for t in every:
        m.submit(t)

    def check() -> None:
        while not m.empty():
            assert m.wait(120) is not None, "a task of the workload never came back"
        bad = [(t, t.result, t.error) for t in every if not t.successful()]
        assert not bad, bad
        assert [t.output for t in cmds] == [f"{i}\n" for i in range(60)]
        assert [t.output for t in calls] == [i + 1 for i in range(60)]
        assert use.output.strip() == "1000" and buf.output == "buffered\n"

    return check


# --------------------------------------------------------------------------- the fake manager


class FakeManager:
    """A ROUTER that welcomes one worker, then sends it mutated manager-to-worker messages."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ident: bytes | None = None
        self.heard = 0.0

    def serve(self, n: int, rng: random.Random) -> int:
        wait_for(self._hello, timeout=60, what="the worker's hello")
        welcome = Welcome(workflow="fuzz", manager_id="fake", heartbeat_interval=0.5, heartbeat_timeout=600)
        assert self.ident is not None
        self.sock.send_multipart([self.ident, *encode(welcome)])
        sent = 0
        for parts in mutations(rng):
            if sent >= n:
                break
            self.sock.send_multipart([self.ident, *parts])
            sent += 1
            self._drain()
        return sent

    def _hello(self) -> bool:
        self._drain()
        return self.ident is not None

    def _drain(self) -> None:
        while self.sock.poll(0):
            ident, *body = self.sock.recv_multipart()
            self.heard = time.monotonic()
            if self.ident is None:
                msg, _ = decode(body)
                if isinstance(msg, Hello):
                    self.ident = ident


# --------------------------------------------------------------------------- the test


def _transfer_port(pid: int) -> int:
    ports = [
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    ]
    assert ports, f"worker {pid} listens on no port"
    return ports[0]


@pytest.fixture
def fake_managed_worker(tmp_path: Path) -> Iterator[tuple[FakeManager, subprocess.Popen[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    fake = FakeManager(ctx)
    env = {**os.environ, "KUBEVINE_TOKEN": "fuzz-token-0123456789"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubevine", "--log-level", "ERROR", "worker", f"127.0.0.1:{fake.port}",
         "--workdir", str(tmp_path / "fw"), "--cores", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield fake, proc
    proc.kill()
    proc.wait(30)
    fake.sock.close(0)


def test_fuzzed_frames_at_every_socket_kill_nothing_and_the_workload_is_right(
    tmp_path: Path, fake_managed_worker: tuple[FakeManager, subprocess.Popen[bytes]]
) -> None:
    rng = random.Random(SEED)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    fake, lone_worker = fake_managed_worker
    with (
        vine.LocalCluster(workers=2, workdir=tmp_path / "c") as c,
        vine.Manager(c.address, token=c.token) as m,
    ):
        check = workload(m, tmp_path)
        socks: list[zmq.Socket[bytes]] = []

        def dealer(port_or_addr: str) -> zmq.Socket[bytes]:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDTIMEO, 30000)
            s.connect(f"tcp://{port_or_addr}")
            socks.append(s)
            return s

        counts: dict[str, int] = {}
        wrong = encode(Hello(protocol=PROTOCOL_VERSION, token="w" * 20, role="client", client="x"))
        status = encode(StatusRequest())
        unknown = dealer(c.address)
        counts["manager, no hello"] = blast(unknown, FRAMES, rng, wrong, b"refused")
        client = dealer(c.address)
        client.send_multipart(
            encode(Hello(protocol=PROTOCOL_VERSION, token=c.token, role="client", client="fuzz"))
        )
        counts["manager, as a client"] = blast(client, FRAMES, rng, status, b"status_reply")
        fake_worker = dealer(c.address)
        info = WorkerInfo(worker_id="fuzz-w", node="n", host="h", pid=1, resources=Resources(cores=0))
        fake_worker.send_multipart(
            encode(Hello(protocol=PROTOCOL_VERSION, token=c.token, role="worker", worker=info))
        )
        counts["manager, as a worker"] = blast(fake_worker, FRAMES, rng, wrong, b"refused")
        probe = [b"kv-get/2", b"p" * 32, b"buf-1", bytes(8), (1).to_bytes(4, "big")]
        for i, w in enumerate(c.workers):
            port = _transfer_port(w.pid)
            counts[f"transfer server {i}"] = blast(
                dealer(f"127.0.0.1:{port}"), FRAMES // 2, rng, probe, b"proof"
            )
        counts["a worker's own connection"] = fake.serve(FRAMES, rng)
        for s in socks:
            s.close(0)

        check()  # the workload finished right while all that went on
        assert c.manager is not None and c.manager.poll() is None, "the manager died"
        assert all(w.poll() is None for w in c.workers), "a worker died"
        assert len([w for w in m.status().workers if w.id != "fuzz-w"]) == 2  # both real ones still there
        assert lone_worker.poll() is None, "the worker fed by the fake manager died"
        since = time.monotonic()
        wait_for(
            lambda: fake._drain() or fake.heard > since, timeout=10, what="the fuzzed worker's heartbeat"
        )
    print(f"fuzzed frames (seed {SEED}):", json.dumps(counts), "total", sum(counts.values()))
