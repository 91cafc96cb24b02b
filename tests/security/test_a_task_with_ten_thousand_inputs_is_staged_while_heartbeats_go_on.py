"""A task with 10,000 inputs is staged in time linear in its inputs, and the manager keeps
answering heartbeats meanwhile: the task completes, no worker is declared lost, no client
reconnects. (Staging checked each input against every stage already planned: 10,000 inputs
stalled the manager 8-34 s, past a worker's heartbeat timeout.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.admin import Admin

N = 10_000


class Probe(threading.Thread):
    """Asks the manager for its status over and over: the slowest answer is the longest the
    manager's loop stood still (a stall that long would miss heartbeats)."""

    def __init__(self, c: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.admin = Admin(c.address, c.token, timeout=30)
        self.slowest = 0.0
        self.calls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.admin.status()
            self.slowest = max(self.slowest, time.monotonic() - t0)
            self.calls += 1


def test_ten_thousand_inputs_are_staged_and_nobody_is_declared_lost(
    cluster: Callable[..., LocalCluster], caplog: pytest.LogCaptureFixture
) -> None:
    c = cluster(workers=1, heartbeat_timeout=5.0)
    with Manager(c.address, token=c.token) as m, caplog.at_level(logging.WARNING):
        t = Task("ls | wc -l")
        for i in range(N):
            t.add_input(m.declare_buffer(f"input {i}\n".encode()), f"in{i}")
        probe = Probe(c)
        probe.start()
        t0 = time.monotonic()
        m.submit(t)
        try:
            assert m.wait(150) is t, "the task did not come back"
        finally:
            probe.stop.set()
            probe.join(30)
        took = time.monotonic() - t0
        assert t.successful() and t.output.strip() == str(N), (t.result, t.error, t.output)
        assert len(m.status().workers) == 1
    assert not [r for r in caplog.records if "reconnect" in r.getMessage()]
    events = txformat.read(c.workdir / "manager" / "transactions.log")
    assert not [e for e in events if e.kind == "WORKER" and e.event == "disconnected"]
    slowest = f"slowest of {probe.calls} status answers meanwhile {probe.slowest * 1000:.0f} ms"
    print(f"{N} inputs: submit to result {took:.1f}s; {slowest}")
    # the longest stall (storing 10,000 uploaded files, mostly) stays inside the heartbeat timeout
    assert probe.calls > 10 and probe.slowest < 5.0, slowest
