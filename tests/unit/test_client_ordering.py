"""A client's control messages (cancel, undeclare, requests) and its submissions reach the
manager in the order the user made them, even when one flush carries them all: a cancel by
tag must not catch a task submitted after it, nor an undeclare pass a submit made after it."""

from __future__ import annotations

import threading
from collections import deque

import zmq

from kubevine.client import Manager
from kubevine.ids import TaskId
from kubevine.protocol import Cancel, Submit, TaskSpec, UndeclareFiles, decode


def _client_queues() -> Manager:
    """A client object with only its outgoing queues (no connection, no I/O thread)."""
    m = Manager.__new__(Manager)
    m._lock = threading.Lock()
    m._files_out, m._pending, m._acks, m._control, m._setup = [], [], [], [], []
    m._replies = deque()
    m._wake = lambda: None  # type: ignore[method-assign]  # no I/O thread to wake
    return m


def _spec(i: int, tag: str) -> TaskSpec:
    return TaskSpec(id=TaskId(i), command="true", tag=tag)


def test_one_flush_keeps_submissions_and_control_messages_in_order() -> None:
    ctx = zmq.Context.instance()
    out, into = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    out.bind("inproc://client-ordering")
    into.connect("inproc://client-ordering")
    try:
        m = _client_queues()
        m._pending.append((_spec(1, "old"), None))
        m._send_control(Cancel(tag="old"))  # cancels task 1 ...
        m._pending.append((_spec(2, "old"), None))  # ... not task 2, submitted after it
        m._send_control(UndeclareFiles(cache_names=["buf-x"]))
        assert m._flush(out)
        seen = []
        while into.poll(100):
            msg, _ = decode(into.recv_multipart())
            if isinstance(msg, Submit):
                seen.append(("submit", [t.id for t in msg.tasks]))
            else:
                seen.append((msg.type, []))
        assert seen == [("submit", [1]), ("cancel", []), ("submit", [2]), ("undeclare_files", [])]
    finally:
        out.close(0)
        into.close(0)
