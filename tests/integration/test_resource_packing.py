"""Workers run as many tasks at once as their resources allow, and never more."""

from __future__ import annotations

import itertools

from kubevine import Task
from kubevine.testing import wait_for


def intervals(tasks: list[Task]) -> dict[str, list[tuple[int, int]]]:
    by_worker: dict[str, list[tuple[int, int]]] = {}
    for t in tasks:
        start, end = map(int, t.output.split())
        by_worker.setdefault(t.worker or "", []).append((start, end))
    return by_worker


def test_two_core_tasks_never_share_a_two_core_worker(cluster, client) -> None:
    c = cluster(workers=2, cores=2)
    m = client(c)
    tasks = []
    for _ in range(12):
        t = Task("date +%s%N; sleep 0.05; date +%s%N", cores=2)
        m.submit(t)
        tasks.append(t)
    while m.wait(60):
        pass
    assert all(t.successful() for t in tasks)
    spans = intervals(tasks)
    assert len(spans) == 2  # both workers were used
    for runs in spans.values():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"two 2-core tasks overlapped on one 2-core worker: {runs}"


def test_one_core_tasks_share_a_two_core_worker(cluster, client) -> None:
    c = cluster(workers=1, cores=2)
    m = client(c)
    tasks = [Task("date +%s%N; sleep 0.3; date +%s%N", cores=1) for _ in range(2)]
    for t in tasks:
        m.submit(t)
    while m.wait(60):
        pass
    (_, a_end), (b_start, _) = sorted(next(iter(intervals(tasks).values())))
    assert b_start < a_end, "two 1-core tasks should have run side by side on a 2-core worker"


def test_a_task_larger_than_every_worker_is_reported_and_blocks_nothing(cluster, client) -> None:
    c = cluster(workers=2, cores=1)
    m = client(c)
    huge = Task("echo never", cores=64)
    huge.set_priority(100)  # first in line, and still it must not block the others
    m.submit(huge)
    small = [Task(f"echo {i}") for i in range(20)]
    for t in small:
        m.submit(t)
    got = [m.wait(30) for _ in small]
    assert all(t is not None and t.successful() for t in got)
    st = m.status()
    assert st.unschedulable == 1 and st.tasks["ready"] == 1
    assert st.largest_waiting.cores == 64
    m.cancel_by_task_id(huge.id)
    assert m.wait(30) is huge and huge.state == "cancelled"
    wait_for(lambda: m.status().unschedulable == 0, what="unschedulable count back to 0")
