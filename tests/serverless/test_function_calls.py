"""FunctionCalls run in warm libraries: right answers, clear errors, isolation, slots."""

from __future__ import annotations

import itertools
import time

import funcs
import pytest
from funcs import SLOW_IMPORT

import kubevine
from kubevine import FunctionCall, PythonTask


def drain(m: kubevine.Manager) -> list[kubevine.Task]:
    out = []
    while (t := m.wait(60)) is not None:
        out.append(t)
    return out


def test_ten_thousand_calls_on_two_workers_return_exactly_the_expected_results(manager) -> None:
    m = manager()
    lib = m.create_library_from_functions("adder", funcs.add, exec_mode="direct")
    m.install_library(lib)
    ids = {}
    for i in range(10_000):
        ids[m.submit(FunctionCall("adder", "add", i, y=i))] = 2 * i
    done = drain(m)
    assert len(done) == 10_000 and len({t.id for t in done}) == 10_000  # no loss, no duplicates
    assert {t.id: t.output for t in done} == ids
    assert all(t.successful() for t in done)
    assert len({t.worker for t in done}) == 2  # both workers served calls


def test_an_exception_reaches_the_caller_with_type_message_and_remote_traceback(manager) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("f", funcs.fail, exec_mode="direct"))
    calls = [FunctionCall("f", "fail", i) for i in range(6)]
    for c in calls:
        m.submit(c)
    drain(m)
    bad = calls[3]
    assert bad.outcome == "exception" and not bad.successful()
    with pytest.raises(KeyError, match="no such key 3") as e:
        _ = bad.value
    remote = e.value.remote_traceback
    assert "in fail" in remote and "no such key" in remote and "libproc" not in remote
    assert [c.output for c in calls if c is not bad] == [0, 1, 2, 4, 5]  # the library kept serving


@pytest.mark.parametrize("mode", ["direct", "fork"])
def test_a_call_that_kills_its_process_fails_clearly_and_the_next_calls_succeed(manager, mode: str) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("d", funcs.die, funcs.add, exec_mode=mode))
    first = FunctionCall("d", "add", 1)
    m.submit(first)
    assert m.wait(60) is first and first.output == 2
    dead = FunctionCall("d", "die", 9)
    m.submit(dead)
    assert m.wait(60) is dead
    assert not dead.successful()
    err = dead.error or ""
    if mode == "direct":
        assert dead.outcome == "library_error" and "crashed" in err and "exit code 9" in err
    else:
        with pytest.raises(RuntimeError, match="crashed its forked process"):
            _ = dead.value
    after = [FunctionCall("d", "add", i) for i in range(5)]
    for c in after:
        m.submit(c)
    drain(m)
    assert [c.output for c in after] == [1, 2, 3, 4, 5]


def test_unknown_library_and_unknown_function_fail_only_that_call(manager) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("known", funcs.add, exec_mode="direct"))
    no_lib, no_fn, ok = (
        FunctionCall("unknown", "add", 1),
        FunctionCall("known", "nope", 1),
        FunctionCall("known", "add", 1),
    )
    for c in (no_lib, no_fn, ok):
        m.submit(c)
    drain(m)
    assert no_lib.outcome == "library_error" and "no library named 'unknown'" in (no_lib.error or "")
    assert no_fn.outcome == "library_error" and "has no function 'nope'" in (no_fn.error or "")
    assert ok.output == 2


def test_a_library_that_cannot_start_fails_its_calls_with_the_reason(manager) -> None:
    m = manager(workers=2)
    lib = m.create_library_from_functions(
        "broken", funcs.add, hoisting_modules=["brokenmod"], exec_mode="direct"
    )
    m.install_library(lib)
    c = FunctionCall("broken", "add", 1)
    m.submit(c)
    assert m.wait(60) is c
    assert c.outcome == "library_error" and "brokenmod cannot be imported on purpose" in (c.error or "")
    t = kubevine.Task("echo the worker is fine")
    m.submit(t)
    assert m.wait(30) is t and t.successful()


def test_warm_start_calls_skip_the_import_that_python_tasks_pay_each_time(manager) -> None:
    m = manager(workers=1)
    lib = m.create_library_from_functions(
        "warm", funcs.slow_value, hoisting_modules=["slowmod"], exec_mode="direct"
    )
    m.install_library(lib)
    warmup = FunctionCall("warm", "slow_value")
    m.submit(warmup)
    assert m.wait(60) is warmup and warmup.output == 42
    t0 = time.perf_counter()
    calls = [FunctionCall("warm", "slow_value") for _ in range(20)]
    for c in calls:
        m.submit(c)
    drain(m)
    per_call = (time.perf_counter() - t0) / 20
    assert [c.output for c in calls] == [42] * 20
    assert per_call < SLOW_IMPORT / 10, f"a warm call took {per_call:.3f}s"
    t0 = time.perf_counter()
    tasks = [PythonTask(funcs.slow_value) for _ in range(3)]
    for t in tasks:
        m.submit(t)
    drain(m)
    per_task = (time.perf_counter() - t0) / 3
    assert [t.output for t in tasks] == [42] * 3, [(t.state, t.outcome, t.error, t._output) for t in tasks]
    assert per_task > SLOW_IMPORT, f"a PythonTask imports slowmod itself; took {per_task:.3f}s"
    assert all(c.wall_time < SLOW_IMPORT / 10 for c in calls)


def test_fork_mode_isolates_global_state_and_direct_mode_shares_it(manager) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("forked", funcs.bump, exec_mode="fork"))
    m.install_library(m.create_library_from_functions("direct", funcs.bump, exec_mode="direct"))
    forked = [FunctionCall("forked", "bump") for _ in range(4)]
    for c in forked:
        m.submit(c)
    drain(m)
    direct = [FunctionCall("direct", "bump") for _ in range(4)]
    for c in direct:
        m.submit(c)
    drain(m)
    assert [c.output for c in forked] == [1, 1, 1, 1]  # each call starts from the library's state
    assert sorted(c.output for c in direct) == [1, 2, 3, 4]  # calls share the process


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_a_library_with_two_slots_never_runs_more_than_two_calls_at_once(manager, mode: str) -> None:
    m = manager(workers=1, cores=4)
    lib = m.create_library_from_functions("s", funcs.stamp, exec_mode=mode)
    lib.set_function_slots(2)
    m.install_library(lib)
    calls = [FunctionCall("s", "stamp", 0.15) for _ in range(8)]
    for c in calls:
        m.submit(c)
    drain(m)
    spans = [c.output[:2] for c in calls]
    points = sorted(itertools.chain((s, 1) for s, _ in spans), key=lambda p: p[0])
    ends = sorted(e for _, e in spans)
    most, running, j = 0, 0, 0
    for start, _ in points:
        while j < len(ends) and ends[j] <= start:
            running -= 1
            j += 1
        running += 1
        most = max(most, running)
    assert most == 2


def test_library_context_is_set_up_once_and_seen_by_calls(manager) -> None:
    m = manager(workers=1)
    lib = m.create_library_from_functions(
        "ctx",
        funcs.from_context,
        funcs.pid,
        exec_mode="direct",
        library_context_info=(funcs.setup_context, ["physicist"], {}),
    )
    m.install_library(lib)
    calls = [FunctionCall("ctx", "from_context") for _ in range(3)] + [
        FunctionCall("ctx", "pid") for _ in range(3)
    ]
    for c in calls:
        m.submit(c)
    drain(m)
    assert [c.output for c in calls[:3]] == ["hello physicist"] * 3
    assert len({c.output for c in calls[3:]}) == 1  # one warm process served them all


def test_python_task_returns_its_value_or_raises_its_exception(manager) -> None:
    m = manager(workers=1)
    good, bad = PythonTask(funcs.add, 20, y=22), PythonTask(funcs.fail, 3)
    m.submit(good)
    m.submit(bad)
    drain(m)
    assert good.output == 42 and good.successful()
    assert bad.outcome == "exception"
    with pytest.raises(KeyError, match="no such key 3"):
        _ = bad.value


def test_map_and_the_executor_return_values_in_order(manager) -> None:
    m = manager(workers=2)
    assert m.map(funcs.add, range(100)) == [i + 1 for i in range(100)]
    ex = kubevine.Executor(m)
    assert list(ex.map(funcs.add, range(10), range(10))) == [2 * i for i in range(10)]
    f = ex.submit(funcs.fail, 3)
    with pytest.raises(KeyError):
        f.result(timeout=60)


def test_calls_travel_in_batches_both_ways(manager) -> None:
    """Many calls share each message: to the workers, back from them, and to the client."""
    m = manager(workers=2)
    m.install_library(m.create_library_from_functions("batched", funcs.add, exec_mode="direct"))
    n = 3000
    calls = [FunctionCall("batched", "add", i) for i in range(n)]
    for c in calls:
        m.submit(c)
    drain(m)
    assert [c.output for c in calls] == [i + 1 for i in range(n)]
    perf = m.status().perf
    assert perf.dispatched == perf.completed == n
    for messages in (perf.dispatch_messages, perf.update_messages, perf.result_messages):
        assert 0 < messages <= n / 10, perf


def test_large_arguments_and_results_arrive_intact_next_to_small_ones(manager) -> None:
    """Big values travel as frames of their own, small ones packed together; none is mixed up."""
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("big", funcs.echo_reversed, exec_mode="direct"))
    big = bytes(range(256)) * (32 << 10)  # 8 MiB
    values = [big, b"small", big[: 1 << 16], b"", b"tiny"]
    calls = [FunctionCall("big", "echo_reversed", v) for v in values]
    for c in calls:
        m.submit(c)
    drain(m)
    assert [c.output for c in calls] == [v[::-1] for v in values]
