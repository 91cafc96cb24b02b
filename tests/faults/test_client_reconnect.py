"""A manager that stops answering for longer than the heartbeat timeout (a long stall, a
paused process) makes its clients give up on their socket and connect again. Whatever was
still queued on the abandoned socket — submissions, the files they carry, requests awaiting a
reply — is gone with it; the client must send it again, or those tasks never run and ``wait``
(or ``status``) waits for ever."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
from pathlib import Path

import pytest

from kubevine import Manager, Task
from kubevine.stats import ManagerStatus
from kubevine.testing import wait_for

from .procs import TOKEN, Procs

N = 16
SIZE = 4 * 1024 * 1024  # 64 MB in all: more than loopback socket buffers hold


def test_submissions_queued_on_an_abandoned_socket_are_sent_again(
    tmp_path: Path, redis_url: str, workflow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    procs = Procs(tmp_path)
    asker = concurrent.futures.ThreadPoolExecutor(1)
    try:
        address = procs.manager(redis_url, workflow_name, "--heartbeat-timeout", "2")
        procs.worker(address, 0)
        with Manager(address, token=TOKEN, client="stalled") as m, caplog.at_level(logging.WARNING):
            warm = Task("true")
            m.submit(warm)
            assert m.wait(60) is warm  # registered, the worker is there

            manager = procs.managers[-1]
            manager.send_signal(signal.SIGSTOP)
            try:
                blobs = [os.urandom(SIZE) for _ in range(N)]
                tasks = []
                for i, blob in enumerate(blobs):
                    t = Task(f"wc -c < in{i}")
                    t.add_input(m.declare_buffer(blob), f"in{i}")
                    m.submit(t)
                    tasks.append(t)
                status = asker.submit(m.status, 60.0)  # asked on the socket about to be dropped
                wait_for(
                    lambda: any("reconnecting" in r.getMessage() for r in caplog.records),
                    timeout=30,
                    what="the client to give up on its socket",
                )
            finally:
                manager.send_signal(signal.SIGCONT)

            done = {}
            while len(done) < N:
                t = m.wait(60)
                assert t is not None, f"only {len(done)} of {N} tasks came back after the reconnect"
                done[t.id] = t
            for t in tasks:
                assert done[t.id].outcome == "success", done[t.id].error
                assert int(done[t.id].output) == SIZE
            assert isinstance(status.result(60), ManagerStatus)  # asked again, answered
            assert any("sent" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    finally:
        asker.shutdown(wait=False, cancel_futures=True)
        procs.stop()
