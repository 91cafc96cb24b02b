"""A PythonTask's declared outputs are collected like a command's: temps stay on the worker
for their consumers, local outputs come back, a missing one fails the task."""

from __future__ import annotations

from pathlib import Path

from kubevine import LocalCluster, Manager, PythonTask, Task
from kubevine.protocol import Outcome


def write_numbers(n: int) -> int:
    with open("numbers", "w") as f:
        f.writelines(f"{i}\n" for i in range(1, n + 1))
    return n


def write_nothing() -> str:
    return "forgot to write it"


def test_a_python_task_temp_output_is_read_by_a_consumer_task(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=2, workdir=tmp_path / "c") as c,
        Manager(c.address, token=c.token) as m,
    ):
        tmp = m.declare_temp()
        back = m.declare_file(tmp_path / "numbers.txt")
        producer = PythonTask(write_numbers, 1000)
        producer.add_output(tmp, "numbers")
        consumer = Task("awk '{s+=$1} END {print s}' numbers")
        consumer.add_input(tmp, "numbers")
        local = PythonTask(write_numbers, 3)
        local.add_output(back, "numbers")
        for t in (producer, consumer, local):
            m.submit(t)
        done = {m.wait(60) for _ in range(3)}
        assert done == {producer, consumer, local}
        assert producer.successful() and producer.output == 1000
        assert consumer.successful(), (consumer.outcome, consumer.error)
        assert consumer.output == "500500\n"
        assert local.successful() and (tmp_path / "numbers.txt").read_text() == "1\n2\n3\n"


def test_a_python_task_that_does_not_write_its_output_fails_and_its_consumer_too(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=1, workdir=tmp_path / "c") as c,
        Manager(c.address, token=c.token) as m,
    ):
        tmp = m.declare_temp()
        producer = PythonTask(write_nothing)
        producer.add_output(tmp, "numbers")
        consumer = Task("cat numbers")
        consumer.add_input(tmp, "numbers")
        m.submit(producer)
        m.submit(consumer)
        assert {m.wait(60), m.wait(60)} == {producer, consumer}
        assert producer.outcome == Outcome.OUTPUT_MISSING and "numbers" in (producer.error or "")
        assert not producer.completed() and not producer.successful()  # TaskVine: "output missing"
        assert consumer.outcome == Outcome.INPUT_MISSING
