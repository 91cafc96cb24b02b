"""A manager played by the test: a ROUTER that welcomes one real worker, dispatches what the
test says, serves files from a dict (in pieces, or whole when asked so) and records every
update, so what a worker sends can be looked at message by message."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

import zmq

from kubevine import chunks
from kubevine.auth import Credentials, generate_token
from kubevine.ids import CacheName
from kubevine.protocol import (
    FROM_WORKER,
    Assignment,
    AttemptResult,
    Dispatch,
    FileData,
    FileRequest,
    Heartbeat,
    Hello,
    TaskRef,
    UpdateAck,
    Welcome,
    WorkerUpdate,
    _Msg,
    decode,
    encode,
)


class FakeManager:
    def __init__(self, encrypt: bool = False, heartbeat_timeout: float = 30.0) -> None:
        self.token = generate_token()
        self.encrypt = encrypt
        self.heartbeat_timeout = heartbeat_timeout
        self.hello: Hello | None = None
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = Credentials(self.token, encrypt).server(ctx.socket(zmq.ROUTER))
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"127.0.0.1:{port}"
        self.files: dict[CacheName, bytes] = {}
        self.whole_only = False  # a manager from before pieces
        self.ident: bytes | None = None
        self.updates: list[tuple[WorkerUpdate, list[bytes]]] = []
        self.results: dict[int, tuple[AttemptResult, list[bytes]]] = {}  # by task id
        self.largest_message = 0
        self.heard: list[float] = []  # when each message from the worker arrived

    def send(self, msg: _Msg, frames: Sequence[bytes] = ()) -> None:
        assert self.ident is not None
        self.sock.send_multipart([self.ident, *encode(msg, frames)])

    def dispatch(self, assignments: list[Assignment], payloads: Sequence[bytes] = ()) -> None:
        self.send(Dispatch(tasks=assignments), payloads)

    def pump(self, timeout: float) -> bool:
        """Handle one message from the worker, if one comes within ``timeout``."""
        if not self.sock.poll(int(timeout * 1000)):
            return False
        parts = self.sock.recv_multipart()
        self.heard.append(time.monotonic())
        self.largest_message = max(self.largest_message, sum(map(len, parts[1:])))
        ident, body = parts[0], parts[1:]
        msg, frames = decode(body, FROM_WORKER)
        match msg:
            case Hello():
                self.ident, self.hello = ident, msg
                welcome = Welcome(
                    workflow="fake",
                    manager_id=uuid.uuid4().hex,
                    heartbeat_interval=0.5,
                    heartbeat_timeout=self.heartbeat_timeout,
                )
                self.send(welcome)
            case Heartbeat():
                self.send(Heartbeat())
            case WorkerUpdate():
                self.updates.append((msg, frames))
                for r in msg.results:
                    self.results[int(r.task_id)] = (r, frames)
                if msg.results:
                    acked = [TaskRef(task_id=r.task_id, attempt=r.attempt) for r in msg.results]
                    self.send(UpdateAck(tasks=acked))
            case FileRequest():
                self._serve(msg)
            case _:
                pass
        return True

    def _serve(self, req: FileRequest) -> None:
        if self.whole_only:
            names = list(req.cache_names)  # pieces are not understood: ignored
        else:
            names = list(req.cache_names)
            for p in req.pieces:
                data = self.files.get(p.cache_name)
                if data is None:
                    self.send(FileData(cache_name=p.cache_name, error="no such file"))
                    continue
                piece = data[p.offset : p.offset + min(p.length, chunks.CHUNK)]
                self.send(
                    FileData(cache_name=p.cache_name, frame=0, offset=p.offset, total=len(data)), [piece]
                )
        for name in names:
            data = self.files.get(name)
            if data is None:
                self.send(FileData(cache_name=name, error="no such file"))
            else:
                self.send(FileData(cache_name=name, frame=0), [data])

    def until(self, cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout}s")
            self.pump(min(left, 0.2))

    def result(self, task_id: int, timeout: float = 60.0) -> tuple[AttemptResult, list[bytes]]:
        self.until(lambda: task_id in self.results, timeout, f"the result of task {task_id}")
        return self.results[task_id]

    def close(self) -> None:
        self.sock.close(0)
