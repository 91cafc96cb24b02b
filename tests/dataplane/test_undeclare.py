"""``m.undeclare_file``: workers delete their copies, a temp's producer is forgotten by the
manager, a file still in use goes once its readers are done, and a file used again after
being undeclared is sent or made anew."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kubevine import LocalCluster, Manager, Task
from kubevine.protocol import Outcome


def until(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def live_tasks(m: Manager) -> int:
    return sum(m.status().tasks.values())


def test_an_undeclared_temp_leaves_the_workers_and_its_producer_is_forgotten(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=1, workdir=tmp_path / "c") as c,
        Manager(c.address, token=c.token) as m,
    ):
        tmp = m.declare_temp()
        producer = Task("seq 1 1000 > numbers")
        producer.add_output(tmp, "numbers")
        consumer = Task("wc -l < numbers")
        consumer.add_input(tmp, "numbers")
        m.submit(producer)
        m.submit(consumer)
        assert {m.wait(60), m.wait(60)} == {producer, consumer}
        assert consumer.output.strip() == "1000"
        cached = tmp_path / "c" / "worker-0" / "cache" / tmp.cache_name()
        assert cached.exists()
        until(lambda: live_tasks(m) == 1, "only the producer is kept (it may have to run again)")

        m.undeclare_file(tmp)
        until(lambda: not cached.exists(), "the worker deleted the temp")
        until(lambda: live_tasks(m) == 0, "the manager forgot the producer")
        log = tmp_path / "c" / "manager" / "transactions.log"
        until(lambda: f"forget file={tmp.cache_name()}" in log.read_text(), "the log says so")

        late = Task("cat numbers")
        late.add_input(tmp, "numbers")
        m.submit(late)
        assert m.wait(60) is late and late.outcome == Outcome.INPUT_MISSING
        assert f"({tmp.cache_name()}) has no task that produces it" in (late.error or "")
        assert "undeclared" in (late.error or "")


def test_a_file_in_use_goes_once_its_reader_has_finished(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=1, workdir=tmp_path / "c") as c,
        Manager(c.address, token=c.token) as m,
    ):
        data = m.declare_buffer("hello\n" * 100)
        started, go = tmp_path / "started", tmp_path / "go"
        reader = Task(f"touch {started} && while [ ! -e {go} ]; do sleep 0.05; done && wc -l < data")
        reader.add_input(data, "data")
        m.submit(reader)
        until(started.exists, "the reader runs")
        cached = tmp_path / "c" / "worker-0" / "cache" / data.cache_name()
        m.undeclare_file(data)
        m.status()  # the manager has taken the undeclare (it answers in order)
        assert cached.exists(), "deleted while a task was reading it"
        go.touch()
        assert m.wait(60) is reader and reader.successful(), reader.error
        assert reader.output.strip() == "100"
        until(lambda: not cached.exists(), "the file was deleted after its reader finished")


def test_a_buffer_undeclared_and_used_again_is_sent_again(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=1, workdir=tmp_path / "c") as c,
        Manager(c.address, token=c.token) as m,
    ):
        data = m.declare_buffer("a\nb\nc\n")
        cached = tmp_path / "c" / "worker-0" / "cache" / data.cache_name()
        first = Task("wc -l < data")
        first.add_input(data, "data")
        m.submit(first)
        assert m.wait(60) is first and first.output.strip() == "3"
        m.undeclare_file(data)
        until(lambda: not cached.exists(), "the worker deleted the buffer")
        again = Task("wc -l < data")
        again.add_input(data, "data")
        m.submit(again)
        assert m.wait(60) is again and again.successful(), again.error
        assert again.output.strip() == "3"


def test_an_undeclare_just_before_close_still_happens(tmp_path: Path) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c:
        with Manager(c.address, token=c.token) as m:
            data = m.declare_buffer("x\n")
            t = Task("cat data")
            t.add_input(data, "data")
            m.submit(t)
            assert m.wait(60) is t and t.successful()
            cached = tmp_path / "c" / "worker-0" / "cache" / data.cache_name()
            assert cached.exists()
            m.undeclare_file(data)  # and close at once
        until(lambda: not cached.exists(), "the worker deleted the file")


def test_a_lost_temp_whose_producer_read_an_undeclared_temp_fails_its_reader(tmp_path: Path) -> None:
    """F1 -> P2 -> F2: F1 undeclared, then F2's only copy lost. P2 cannot run again; the task
    that needs F2 fails saying why instead of waiting for ever."""
    import os
    import signal

    with (
        LocalCluster(workers=2, workdir=tmp_path / "c", heartbeat_timeout=2) as c,
        Manager(c.address, token=c.token) as m,
    ):
        f1, f2 = m.declare_temp(), m.declare_temp()
        p1 = Task("echo one > f1")
        p1.add_output(f1, "f1")
        p2 = Task("cat f1 > f2 && echo two >> f2")
        p2.add_input(f1, "f1")
        p2.add_output(f2, "f2")
        m.submit(p1)
        m.submit(p2)
        assert {m.wait(60), m.wait(60)} == {p1, p2} and p2.successful(), p2.error
        m.undeclare_file(f1)
        until(lambda: live_tasks(m) == 1, "the manager forgot f1's producer")
        assert p2.worker is not None
        os.kill(int(p2.worker.rsplit("-", 2)[-2]), signal.SIGKILL)  # ids are <node>-<pid>-<suffix>
        until(lambda: len(m.status().workers) == 1, "the manager noticed the lost worker")
        reader = Task("cat f2")
        reader.add_input(f2, "f2")
        m.submit(reader)
        assert m.wait(60) is reader and reader.outcome == Outcome.INPUT_MISSING
        assert "cannot be made again" in (reader.error or "") and "undeclared" in (reader.error or "")
