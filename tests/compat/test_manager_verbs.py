"""The manager as a TaskVine program drives it: Manager(port) and m.port, workers joining with
the two-argument command line, tags, bulk cancels, map/pair/tree_reduce, hunger and stats,
the tasks cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import kubevine as vine
from kubevine.testing import wait_for

from .conftest import drain


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_manager_on_a_port_range_starts_no_workers_and_a_worker_joins_with_host_and_port(
    manager, tmp_path: Path
) -> None:
    with socket.socket() as busy:  # the first port of the range is taken: the next free one is used
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        low = busy.getsockname()[1]
        m = manager(port=[low, low + 20], name="proj")
        assert low < m.port <= low + 20 and _listening(m.port) and m.name == "proj"
    assert m.status().workers == []  # TaskVine's Manager(port): no workers of its own
    env = {k: v for k, v in os.environ.items() if k != "KUBEVINE_TOKEN"}  # the token is found locally
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubevine",
            "worker",
            "localhost",
            str(m.port),
            "--workdir",
            str(tmp_path / "w"),
        ],
        env=env,
    )
    try:
        t = vine.Task("echo joined")
        m.submit(t)
        assert m.wait(60) is t and t.std_output == "joined\n"
        assert "kubevine worker" in " ".join(m.worker_command) and str(m.port) in m.worker_command
    finally:
        worker.terminate()
        worker.wait(30)


def test_wait_for_tag_returns_tasks_in_the_order_asked(manager) -> None:
    m = manager(workers=2)
    for tag in "abcd":
        m.submit(vine.Task(f"echo {tag}", tag=tag))
    got = [m.wait_for_tag(tag, 60) for tag in "dbca"]
    assert [t.tag for t in got if t is not None] == ["d", "b", "c", "a"]
    assert m.wait_for_tag("z", 0) is None and m.empty()


def test_cancel_by_task_tag_cancels_one_and_cancel_all_the_rest(manager) -> None:
    m = manager(workers=1)
    for _ in range(4):
        m.submit(vine.Task("sleep 30", tag="slow"))
    assert m.cancel_by_task_tag("slow") == 1
    first = m.wait(30)
    assert first is not None and first.result == "cancelled"
    assert m.cancel_all() == 3
    rest = drain(m)
    assert [t.result for t in rest] == ["cancelled"] * 3


def test_map_pair_and_tree_reduce(manager) -> None:
    m = manager(workers=2)
    assert m.map(lambda x: x * 2, range(10), 3) == [x * 2 for x in range(10)]
    assert m.pair(lambda p: p[0] + p[1], ["a", "b"], ["x", "y"], 3) == ["ax", "ay", "bx", "by"]
    assert m.tree_reduce(max, [5, 3, 98765, 2, 7, 1], 3) == 98765


def test_hungry_counts_what_the_workers_could_take_and_stats_are_taskvines(manager) -> None:
    m = manager(workers=1)
    assert m.tune("hungry-minimum", 11) == 0 and m.hungry() == 11
    assert m.tune("no-such-knob", 1) == -1 and m.tune("keepalive-interval", 5) == 0
    for _ in range(3):
        m.submit(vine.Task("sleep 30", cores=1))
    wait_for(lambda: m.stats.tasks_running == 1, timeout=30)
    st = m.stats
    assert st.workers_connected == 1 and st.tasks_waiting == 2 and st.total_cores == 1
    assert m.hungry() == 9  # the minimum (11) less the two waiting
    m.cancel_all()
    drain(m)


def test_the_tasks_cache_returns_a_success_without_running_it_again(manager, tmp_path: Path) -> None:
    def square(x: int) -> int:
        return x * x

    m = manager(workers=1)
    m.enable_tasks_cache(cache_dir=tmp_path / "cache", log_file=tmp_path / "cache.txlog")
    first = [vine.PythonTask(square, i) for i in range(3)]
    for t in first:
        m.submit(t)
    drain(m)
    assert all(t.successful() and t.hostname != "CACHED" for t in first)
    assert len(list((tmp_path / "cache").glob("*.output"))) == 3
    m2 = manager(workers=1)  # a new client and manager: the cache is on disk
    m2.enable_tasks_cache(cache_dir=tmp_path / "cache", log_file=tmp_path / "cache.txlog")
    again = [vine.PythonTask(square, i) for i in range(3)] + [vine.PythonTask(square, 99)]
    for t in again:
        m2.submit(t)
    drain(m2)
    assert [t.output for t in again] == [0, 1, 4, 9801]
    assert [t.hostname == "CACHED" for t in again] == [True, True, True, False]


@pytest.mark.parametrize("ssl", [True, ("key.pem", "cert.pem")])
def test_ssl_means_an_encrypted_wire(ssl: object) -> None:
    from kubevine.client import _encryption

    assert _encryption(ssl, None) is True  # type: ignore[arg-type]
    assert _encryption((None, None), False) is False and _encryption(None, False) is False
