"""A worker killed with SIGKILL mid-task: its tasks complete on the other worker."""

from __future__ import annotations

import signal

from kubevine import Task
from kubevine.testing import wait_for


def test_tasks_of_a_killed_worker_complete_on_the_other_one(cluster, client) -> None:
    c = cluster(workers=2, heartbeat_timeout=2.0)
    m = client(c)
    tasks = [Task(f"sleep 0.4; echo {i}") for i in range(10)]
    for t in tasks:
        m.submit(t)
    victim = c.workers[0]
    # wait until the victim is running something, then kill it without warning
    wait_for(
        lambda: any(w.running for w in m.status().workers if f"-{victim.pid}-" in w.id),
        what="the victim worker running a task",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outputs = set()
    while (t := m.wait(60)) is not None:
        assert t.successful(), (t.outcome, t.error)
        outputs.add(t.output)
    assert outputs == {f"{i}\n" for i in range(10)}
    assert any(t.attempts > 1 for t in tasks), "some task should have been re-run after the kill"
    assert all(f"-{victim.pid}-" not in (t.worker or "") for t in tasks)
    st = m.status()
    assert len(st.workers) == 1
    assert st.totals["done"] == 10
