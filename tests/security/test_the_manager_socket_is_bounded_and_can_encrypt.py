"""The manager's socket: encrypted when the workflow says so, and bounded for everyone.

A stranger who only reaches the manager's port can neither grow its memory with one huge
frame before saying hello, nor talk to an encrypting manager in clear text; a client with the
wrong setting is told at once what is wrong instead of waiting for a welcome.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil
import pytest

from kubevine import LocalCluster, Manager, PythonTask, Task
from kubevine.admin import Admin, AdminError
from kubevine.clientio import ConnectionRefused
from kubevine.protocol import MAX_MESSAGE

from .zmtp import connect_dealer, long_frame_header

MB = 1 << 20


def test_an_encrypted_cluster_runs_tasks_end_to_end(cluster: Callable[..., LocalCluster]) -> None:
    c = cluster(workers=2, encrypt=True)
    with Manager(c.address, token=c.token, encrypt=True) as m:
        data = m.declare_buffer(os.urandom(3 * MB))  # through the manager to a worker, encrypted
        tasks = [Task(f"wc -c < in && echo {i}") for i in range(6)]
        for t in tasks:
            t.add_input(data, "in")
            m.submit(t)
        m.submit(py := PythonTask(pow, 2, 10))
        got = [m.wait(60) for _ in range(7)]
        assert all(t is not None and t.successful() for t in got), [(t.result, t.error) for t in got if t]
        assert sorted(t.output for t in tasks) == sorted(f"{3 * MB}\n{i}\n" for i in range(6))
        assert py.output == 1024
        assert len(m.status().workers) == 2
    with pytest.raises(AdminError):  # and it was encrypted: a plain session gets nothing
        Admin(c.address, c.token, timeout=2, encrypt=False).status()


def test_a_plain_client_is_told_at_once_that_the_manager_encrypts(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=0, encrypt=True)
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefused, match="encrypts its connections"):
        Manager(c.address, token=c.token, encrypt=False)
    assert time.monotonic() - t0 < 10  # not the connect timeout
    log = c.workdir / "manager" / "manager.log"
    deadline = time.monotonic() + 10
    while "failed the encryption (CURVE) handshake" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    # and an encrypting client is served
    with Manager(c.address, token=c.token, encrypt=True) as m:
        assert m.status().workflow == c.name


def test_a_huge_frame_claimed_before_hello_is_cut_and_the_manager_stays_small(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=1)
    assert c.manager is not None
    proc = psutil.Process(c.manager.pid)
    host, port = c.address.rsplit(":", 1)
    before = proc.memory_info().rss
    s = connect_dealer(host, int(port))
    s.sendall(long_frame_header(1 << 30))  # "a 1 GiB frame follows", before any hello
    sent = 0
    block = os.urandom(MB)
    with pytest.raises(OSError):  # reset by the manager (EPIPE / ECONNRESET)
        while sent < 3 * MAX_MESSAGE:  # without a limit the manager would keep all of it
            s.sendall(block)
            sent += len(block)
    s.close()
    assert sent < MAX_MESSAGE // 2, f"{sent // MB} MB were accepted before the manager cut the connection"
    grown = proc.memory_info().rss - before
    assert grown < 32 * MB, f"the manager grew by {grown // MB} MB"
    with Manager(c.address, token=c.token) as m:  # and it goes on serving
        t = Task("echo fine")
        m.submit(t)
        assert m.wait(60) is t and t.output == "fine\n"
