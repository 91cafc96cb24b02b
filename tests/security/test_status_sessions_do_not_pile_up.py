"""Status callers come and go without the manager keeping (and heartbeating) each of them.

The operator asks a manager for its status every few seconds for as long as a workflow lives,
and ``kubevine status`` is run by hand or by scripts. Each call is a session: one that says
goodbye is forgotten at once, and one whose caller vanished without a word (killed, timed
out) is forgotten once it has been silent for the heartbeat timeout. So after 3,000 calls
the manager holds as many sessions as before, and idles as cheaply as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil
import zmq

from kubevine import LocalCluster
from kubevine.admin import Admin
from kubevine.protocol import PROTOCOL_VERSION, Goodbye, Hello, StatusRequest, encode

# 100,000 behave the same (KUBEVINE_STATUS_CALLS=100000; see docs/security.md); the suite runs 3,000
CALLS = int(os.environ.get("KUBEVINE_STATUS_CALLS", "3000"))
BATCH = 250  # sessions open at once
TIMEOUT = 3.0  # the manager's heartbeat timeout here


def calls(address: str, token: str, n: int) -> None:
    """``n`` status calls as admin sessions; every other caller leaves without a goodbye."""
    ctx = zmq.Context.instance()
    hello = encode(Hello(protocol=PROTOCOL_VERSION, token=token, role="admin"))
    ask = encode(StatusRequest())
    bye = encode(Goodbye(reason="done"))
    done = 0
    while done < n:
        socks = []
        for _ in range(min(BATCH, n - done)):
            s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 1000)
            s.connect(f"tcp://{address}")
            s.send_multipart(hello)
            s.send_multipart(ask)
            socks.append(s)
        for i, s in enumerate(socks):
            answers = 0
            deadline = time.monotonic() + 30
            while answers < 2:  # the welcome, then the status (heartbeats aside)
                assert s.poll(max(1, int((deadline - time.monotonic()) * 1000))), "no answer"
                head = s.recv_multipart()[0]
                answers += b'"welcome"' in head[:40] or b'"status_reply"' in head[:40]
            if i % 2 == 0:
                s.send_multipart(bye)
            s.close()
        done += len(socks)


def cpu_over(proc: psutil.Process, seconds: float) -> float:
    """CPU seconds ``proc`` used in a window of ``seconds``."""
    t0 = proc.cpu_times()
    time.sleep(seconds)  # a measuring window, not synchronisation
    t1 = proc.cpu_times()
    return (t1.user + t1.system) - (t0.user + t0.system)


def test_three_thousand_status_calls_leave_sessions_and_idle_cpu_flat(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=1, heartbeat_timeout=TIMEOUT)
    assert c.manager is not None
    proc = psutil.Process(c.manager.pid)
    admin = Admin(c.address, c.token)
    base = admin.status().sessions  # the worker (this call's own session is counted too)
    idle_before = cpu_over(proc, 3.0)

    t0 = time.monotonic()
    calls(c.address, c.token, CALLS)
    took = time.monotonic() - t0
    assert admin.status().sessions > base + 100  # the silent half is still held for now

    deadline = time.monotonic() + 10 * TIMEOUT
    while (held := admin.status().sessions) > base:
        assert time.monotonic() < deadline, f"{held} sessions still held ({base} before)"
        time.sleep(0.2)
    idle_after = cpu_over(proc, 3.0)
    print(f"{CALLS} status calls in {took:.1f}s; idle CPU {idle_before:.3f}s -> {idle_after:.3f}s per 3s")
    assert idle_after < idle_before + 0.15, (idle_before, idle_after)
    assert len(admin.status().workers) == 1  # the worker's own session was never expired
