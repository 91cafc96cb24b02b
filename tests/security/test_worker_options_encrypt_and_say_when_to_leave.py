"""The worker's options that concern its wire and its life: --encrypt (every socket, the
transfer server included), --single-shot, --timeout, --feature, --debug-file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zmq

from kubevine import chunks
from kubevine.auth import Credentials
from kubevine.digest import sha256_bytes
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import Assignment, FileBinding, FileKind, FileSource, Outcome, StageIn, TaskSpec
from kubevine.resources import Resources

from .fakemanager import FakeManager
from .ownworker import OwnWorker


def _ask(address: str, frames: list[bytes], creds: Credentials | None, timeout: float) -> list[bytes] | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if creds is not None:
        creds.client(s)
    s.connect(f"tcp://{address}")
    try:
        s.send_multipart(frames)
        return s.recv_multipart() if s.poll(int(timeout * 1000)) else None
    finally:
        s.close(0)


def test_an_encrypting_worker_talks_only_to_encrypting_peers(tmp_path: Path) -> None:
    fm = FakeManager(encrypt=True)
    w = OwnWorker((fm.address, fm.token), tmp_path / "w", "--encrypt", "--feature", "gpu-a100")
    try:
        fm.until(lambda: fm.hello is not None, 30, "an encrypted hello")
        assert fm.hello is not None and fm.hello.worker is not None
        assert fm.hello.worker.features == ["gpu-a100"]
        data = b"secret data\n"
        name = CacheName("buf-" + sha256_bytes(data))
        fm.files[name] = data
        spec = TaskSpec(
            id=TaskId(1),
            command="cat x",
            inputs=[FileBinding(cache_name=name, remote_name="x", kind=FileKind.BUFFER)],
            resources=Resources(cores=1),
        )
        stage = StageIn(cache_name=name, sources=[FileSource(kind="manager")])
        fm.dispatch([Assignment(spec=spec, attempt=1, stage=[stage])])
        res, frames = fm.result(1)
        assert res.outcome == Outcome.SUCCESS and frames[0] == data
        address = w.transfer_address()
        creds = Credentials(fm.token, encrypt=True)
        request = chunks.get_request(creds.transfer_proof(), name, 0, 100)
        assert _ask(address, request, None, timeout=2.0) is None  # a plain peer cannot even connect
        reply = _ask(address, request, creds, timeout=10.0)
        assert reply is not None
        piece = chunks.parse_reply(reply)
        assert isinstance(piece, chunks.Piece) and piece.data == data
    finally:
        w.stop()
        fm.close()


def test_a_single_shot_worker_leaves_when_its_manager_goes_away(tmp_path: Path) -> None:
    fm = FakeManager(heartbeat_timeout=2.0)
    log = tmp_path / "debug.log"
    w = OwnWorker((fm.address, fm.token), tmp_path / "w", "--single-shot", "-d", "all", "-o", str(log))
    try:
        fm.until(lambda: fm.ident is not None, 30, "the worker's hello")
        fm.close()  # the manager goes away
        assert w.proc.wait(30) == 0
        assert "DEBUG" in log.read_text()
    finally:
        w.stop()


def test_a_worker_with_a_timeout_gives_up_on_a_manager_that_never_answers(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    silent: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)  # takes connections, never answers
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        cmd = [sys.executable, "-m", "kubevine", "worker", "127.0.0.1", str(port), "--timeout", "1"]
        cmd += ["--workdir", str(tmp_path / "w")]
        p = subprocess.run(cmd, env={"KUBEVINE_TOKEN": "x" * 40, "PATH": "/usr/bin:/bin"}, timeout=30)
        assert p.returncode == 1
    finally:
        silent.close(0)
