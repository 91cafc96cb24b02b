"""TaskVine's FuturesExecutor and futures module, its Factory, and DaskVine's get options."""

from __future__ import annotations

import concurrent.futures
import operator

import dask
import pytest

import kubevine as vine
from kubevine import futures
from kubevine.testing import wait_for


def my_sum(a: int, b: int) -> int:
    return a + b


def failure() -> None:
    raise Exception("Expected failure.")


def slow(s: float) -> float:
    import time

    time.sleep(s)
    return s


@pytest.fixture
def executor():
    ex = vine.FuturesExecutor(port=0, factory=True, opts={"max_workers": 2, "min_workers": 2, "cores": 1})
    yield ex
    ex.shutdown()


def test_futures_feed_each_other_and_failures_raise_the_functions_exception(executor) -> None:
    lib = executor.create_library_from_functions(
        "test-library", my_sum, failure, hoisting_modules=None, add_env=False
    )
    executor.install_library(lib)
    a = executor.submit(executor.future_funcall("test-library", "my_sum", 7, 4))
    b = executor.submit(executor.future_funcall("test-library", "my_sum", a, a))
    t3 = executor.future_funcall("test-library", "my_sum", b, a)
    c = executor.submit(t3)
    assert t3.output() == 33 and c.result() == 33 and c.exception() is None
    f = executor.submit(executor.future_funcall("test-library", "failure"))
    with pytest.raises(Exception, match=r"Expected failure\."):
        f.result()
    p = executor.submit(executor.future_task(failure))
    with pytest.raises(Exception) as e:
        p.result()
    assert str(e.value) == "Expected failure." and p.exception() is e.value


def test_wait_as_completed_timeouts_and_cancel(executor) -> None:
    a = executor.submit(executor.future_task(my_sum, 5, 6))
    s = executor.submit(executor.future_task(slow, 60))
    with pytest.raises(concurrent.futures.TimeoutError):
        s.result(timeout=1)
    done = futures.wait([a, s], return_when=futures.FIRST_COMPLETED)
    assert done.done == {a} and done.not_done == {s}
    assert [x.result() for x in futures.as_completed([a], timeout=30)] == [11]
    assert s.cancel() and s.cancelled()
    assert executor.map(lambda x: x * x, range(4)).result() == [0, 1, 4, 9]
    assert executor.reduce(sum, range(10)).result() == 45
    assert executor.allpairs(operator.mul, [1, 2], [3, 4]).result() == [[3, 4], [6, 8]]


def test_a_local_factory_keeps_its_workers_between_min_and_max(manager) -> None:
    m = manager(port=0)
    f = vine.Factory("local", manager=m)
    f.min_workers, f.max_workers, f.cores = 1, 2, 1
    with f:
        wait_for(lambda: len(m.status().workers) == 1, timeout=60, what="the minimum worker")
        for _ in range(4):
            m.submit(vine.Task("sleep 2"))
        wait_for(lambda: len(m.status().workers) == 2, timeout=60, what="a second worker for the demand")
        while not m.empty():
            assert m.wait(60) is not None
        assert len(m.status().workers) <= 2
    with pytest.raises(ValueError, match="needs manager"):
        vine.Factory("local")


def test_daskvine_takes_taskvines_options_and_checkpoint_fn_sees_the_dag(manager) -> None:
    m = vine.DaskVine(workers=2)
    try:
        dsk = {
            "x": 1,
            "y": 2,
            "z": (operator.add, "x", "y"),
            "w": (sum, ["x", "y", "z"]),
            "v": (operator.mul, "w", 2),
        }
        seen = {}

        def checkpoint(dag: vine.DaskVineDag, key: str) -> bool:
            seen[key] = (dag.depth_of(key), dag.get_children(key))
            return dag.depth_of(key) > 1

        got = m.get(
            dsk,
            ["v", "w"],
            lazy_transfers=True,
            checkpoint_fn=checkpoint,
            resources={"cores": 1},
            resources_mode="max",
            submit_per_cycle=10,
            env_vars={},
            wrapper=None,
            lib_resources={"cores": 1},
        )
        assert got == (12, 6)
        assert seen["v"] == (2, {"w"}) and seen["z"] == (0, set())
        assert dask.compute(dask.delayed(operator.add)(1, 2), scheduler=m.get) == (3,)
        with pytest.raises(TypeError, match="unknown option 'lazy_transfer'"):
            m.get(dsk, ["v"], lazy_transfer=True)
    finally:
        m.close()
