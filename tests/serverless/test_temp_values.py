"""Return values kept on the worker (``enable_temp_output``): a FunctionCall's or a
PythonTask's value stays where it was computed as a temp file, feeds other calls and tasks
there or peer to peer, comes to the client only when ``t.output`` is read, and is computed
again if the only copy is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

import kubevine
from kubevine import FunctionCall, Manager, PythonTask
from kubevine.protocol import Outcome

BLOB = 4 << 20  # bytes in the values that must not travel through the manager


def make_blob(n: int, seed: int) -> bytes:
    return bytes([seed % 256]) * n


def measure(name: str) -> tuple[int, int]:
    with open(kubevine.input_path(name), "rb") as f:
        value = cloudpickle.load(f)
    return len(value), value[0]


def summed(*names: str) -> int:
    total = 0
    for name in names:
        with open(kubevine.input_path(name), "rb") as f:
            total += sum(cloudpickle.load(f))
    return total


def squares(n: int) -> list[int]:
    return [i * i for i in range(n)]


def explode(n: int) -> int:
    raise ArithmeticError(f"cannot make {n}")


def read_in_sandbox(name: str) -> int:
    with open(name, "rb") as f:  # a PythonTask's inputs are in its working directory
        return len(cloudpickle.load(f))


def drain(m: Manager, n: int, timeout: float = 60) -> None:
    for _ in range(n):
        assert m.wait(timeout) is not None


def library(m: Manager) -> None:
    m.install_library(m.create_library_from_functions("vals", make_blob, measure, summed, explode))


def kept_blob(m: Manager, n: int, seed: int) -> FunctionCall:
    """A finished call whose value (``n`` bytes of ``seed``) stays on its worker."""
    producer = FunctionCall("vals", "make_blob", n, seed)
    producer.enable_temp_output()
    m.submit(producer)
    assert m.wait(60) is producer and producer.successful(), producer.error
    return producer


def lose_worker_of(m: Manager, task: FunctionCall) -> None:
    """SIGKILL the worker that ran ``task`` and wait until the manager has noticed."""
    assert task.worker is not None
    os.kill(int(task.worker.rsplit("-", 2)[-2]), signal.SIGKILL)  # ids are <node>-<pid>-<suffix>
    deadline = time.monotonic() + 60
    while len(m.status().workers) > 1:
        assert time.monotonic() < deadline, "the killed worker was never noticed"
        time.sleep(0.05)


def test_a_call_value_stays_on_the_worker_and_feeds_calls_and_tasks(manager: Callable[..., Manager]) -> None:
    m = manager(workers=2)
    library(m)
    producer = kept_blob(m, BLOB, 7)
    call, task = FunctionCall("vals", "measure", "blob"), PythonTask(read_in_sandbox, "blob")
    for consumer in (call, task):
        assert producer.output_file is not None
        consumer.add_input(producer.output_file, "blob")
        m.submit(consumer)
    drain(m, 2)
    assert call.output == (BLOB, 7) and task.output == BLOB, (call.error, task.error)
    sent = m.status().perf.transfer_bytes
    assert sent.get("manager", 0) < BLOB, f"the value went through the manager: {sent}"
    assert producer.output == bytes([7]) * BLOB  # fetched now, when asked for


def test_a_python_task_value_feeds_a_call(manager: Callable[..., Manager]) -> None:
    m = manager(workers=1)
    library(m)
    parts = [PythonTask(squares, n) for n in (3, 4)]
    for p in parts:
        p.enable_temp_output()
        m.submit(p)
    total = FunctionCall("vals", "summed", "a", "b")
    for p, name in zip(parts, ("a", "b"), strict=True):
        assert p.output_file is not None
        total.add_input(p.output_file, name)
    m.submit(total)  # waits for its inputs to be made
    drain(m, 3)
    assert total.output == (0 + 1 + 4) + (0 + 1 + 4 + 9), total.error
    assert [p.output for p in parts] == [[0, 1, 4], [0, 1, 4, 9]]


def test_a_producer_that_raises_fails_clearly_and_so_does_its_consumer(
    manager: Callable[..., Manager],
) -> None:
    m = manager(workers=1)
    library(m)
    bad = FunctionCall("vals", "explode", 3)
    bad.enable_temp_output()
    consumer = FunctionCall("vals", "measure", "v")
    assert bad.output_file is not None
    consumer.add_input(bad.output_file, "v")
    m.submit(bad)
    m.submit(consumer)
    drain(m, 2)
    assert bad.outcome == Outcome.EXCEPTION
    with pytest.raises(ArithmeticError, match="cannot make 3"):
        _ = bad.value
    assert not consumer.successful()
    assert consumer.outcome == Outcome.INPUT_MISSING
    assert (
        f"input 'v' ({bad.output_file.cache_name()}) cannot be produced: task {bad.id} failed"
        == consumer.error
    )


def test_a_call_asking_for_an_input_it_lacks_gets_a_clear_error(manager: Callable[..., Manager]) -> None:
    m = manager(workers=1)
    library(m)
    lonely = FunctionCall("vals", "measure", "nothing")
    m.submit(lonely)
    assert m.wait(60) is lonely and lonely.outcome == Outcome.EXCEPTION
    with pytest.raises(FileNotFoundError, match="no input named 'nothing'"):
        _ = lonely.value


def test_a_value_whose_only_copy_is_lost_is_computed_again(manager: Callable[..., Manager]) -> None:
    m = manager(workers=2, heartbeat_timeout=2)
    library(m)
    producer = kept_blob(m, 1000, 9)
    lose_worker_of(m, producer)
    consumer = FunctionCall("vals", "measure", "v")
    assert producer.output_file is not None
    consumer.add_input(producer.output_file, "v")
    m.submit(consumer)
    assert m.wait(60) is consumer
    assert consumer.output == (1000, 9), (consumer.result, consumer.error, m.story(consumer.id or 0))


def test_temp_output_is_enabled_once_and_is_absent_by_default(manager: Callable[..., Any]) -> None:
    t = FunctionCall("vals", "make_blob", 1, 1)
    assert t.output_file is None
    t.enable_temp_output()
    first = t.output_file
    t.enable_temp_output()
    assert t.output_file is first and len(t.outputs) == 1


def test_a_lost_value_whose_library_was_removed_fails_its_consumer_clearly(
    manager: Callable[..., Manager],
) -> None:
    m = manager(workers=2, heartbeat_timeout=2)
    library(m)
    producer = kept_blob(m, 10, 1)
    m.remove_library("vals")
    lose_worker_of(m, producer)
    consumer = PythonTask(read_in_sandbox, "v")
    assert producer.output_file is not None
    consumer.add_input(producer.output_file, "v")
    m.submit(consumer)
    assert m.wait(60) is consumer and consumer.outcome == Outcome.INPUT_MISSING
    assert "library 'vals' was removed" in (consumer.error or "")
    assert m.status().workers  # the manager is still serving
