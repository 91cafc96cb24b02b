"""A task with 10,000 inputs reaches a worker: they are fetched, cached and linked, and the
task runs, while the worker's loop keeps answering (its transfer server is asked something
every 50 ms the whole time and must answer each within a second or two). Its cache once sorted
every entry on each arrival and scanned every task per file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from kubevine.auth import Credentials
from kubevine.digest import sha256_bytes
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import Assignment, FileBinding, FileKind, FileSource, Outcome, StageIn, TaskSpec
from kubevine.resources import Resources

from .fakemanager import FakeManager
from .ownworker import OwnWorker

N = 10_000


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeManager, OwnWorker]]:
    fm = FakeManager()
    w = OwnWorker((fm.address, fm.token), tmp_path / "w")
    fm.until(lambda: fm.ident is not None, 30, "the worker's hello")
    yield fm, w
    w.stop()
    fm.close()


class Prober(threading.Thread):
    """Asks the worker's transfer server for nothing every 50 ms; the slowest answer."""

    def __init__(self, address: str, token: str) -> None:
        super().__init__(daemon=True)
        self.address, self.proof = address, Credentials(token).transfer_proof()
        self.slowest = 0.0
        self.asked = 0
        self.stop = threading.Event()

    def run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://{self.address}")
        try:
            while not self.stop.wait(0.05):
                t0 = time.monotonic()
                s.send_multipart([b"get", b"file-none"])  # (any request: every server answers this one)
                if not s.poll(30_000):
                    self.slowest = 30.0
                    return
                s.recv_multipart()
                self.asked += 1
                self.slowest = max(self.slowest, time.monotonic() - t0)
        finally:
            s.close(0)


def test_ten_thousand_inputs_are_staged_while_the_worker_keeps_answering(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, w = fake
    inputs, stages = [], []
    for i in range(N):
        data = f"input {i}\n".encode()
        name = CacheName("buf-" + sha256_bytes(data))
        fm.files[name] = data
        inputs.append(FileBinding(cache_name=name, remote_name=f"in/{i}", kind=FileKind.BUFFER))
        stages.append(StageIn(cache_name=name, sources=[FileSource(kind="manager")], size=len(data)))
    spec = TaskSpec(id=TaskId(1), command="ls in | wc -l", inputs=inputs, resources=Resources(cores=1))
    prober = Prober(w.transfer_address(), fm.token)
    prober.start()
    t0 = time.monotonic()
    try:
        fm.dispatch([Assignment(spec=spec, attempt=1, stage=stages)])
        res, frames = fm.result(1, timeout=180)
    finally:
        prober.stop.set()
        prober.join(35)
    took = time.monotonic() - t0
    assert res.outcome == Outcome.SUCCESS, res
    assert frames[0].strip() == str(N).encode()
    assert prober.asked > 10 and prober.slowest < 2.0, (prober.slowest, prober.asked, took)
