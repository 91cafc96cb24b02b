"""A worker paused (SIGSTOP) past the heartbeat timeout is declared lost; its tasks run
elsewhere; when it resumes, its late results are rejected and it registers again."""

from __future__ import annotations

import signal

from kubevine import Task
from kubevine.testing import wait_for


def test_a_paused_worker_is_replaced_then_rejoins_without_duplicate_results(cluster, client) -> None:
    c = cluster(workers=2, heartbeat_timeout=2.0)
    m = client(c)
    tasks = [Task(f"sleep 0.5; echo {i}") for i in range(8)]
    for t in tasks:
        m.submit(t)
    victim = c.workers[0]
    wait_for(
        lambda: any(w.running for w in m.status().workers if f"-{victim.pid}-" in w.id),
        what="the victim running a task",
    )
    victim.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len(m.status().workers) == 1, timeout=30, what="the paused worker declared lost")
    finally:
        victim.send_signal(signal.SIGCONT)
    got = []
    while (t := m.wait(60)) is not None:
        got.append(t)
    assert sorted(t.output for t in got) == sorted(f"{i}\n" for i in range(8))
    assert len(got) == 8 and len({t.id for t in got}) == 8  # each result exactly once
    wait_for(lambda: len(m.status().workers) == 2, timeout=30, what="the resumed worker registered again")
    more = [Task("echo again") for _ in range(6)]
    for t in more:
        m.submit(t)
    while m.wait(60) is not None:
        pass
    assert all(t.successful() for t in more)
    assert any(t.attempts > 1 for t in got), "the task the paused worker held should have run again"
