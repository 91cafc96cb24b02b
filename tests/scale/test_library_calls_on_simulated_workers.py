"""A library installed on simulated workers answers its calls (values and exceptions)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kubevine import FunctionCall, LocalCluster, Manager
from kubevine.simworker import Simulator


def add(x: int, y: int) -> int:
    return x + y


def fail(why: str) -> None:
    raise ValueError(why)


def test_calls_to_a_library_on_simulated_workers_complete(
    cluster: Callable[..., LocalCluster],
    simulate: Callable[..., Simulator],
    client: Callable[..., Manager],
) -> None:
    c = cluster()
    sim = simulate(c.address, c.token, workers=4, run_functions=True, library_start=0.05)
    m = client(c.address, c.token)
    m.install_library(m.create_library_from_functions("arith", add, fail, exec_mode="fork"))
    want = {m.submit(FunctionCall("arith", "add", i, 1)): i + 1 for i in range(500)}
    bad = m.submit(FunctionCall("arith", "fail", "boom"))
    got = {}
    while (t := m.wait(30)) is not None:
        got[t.id] = t
    assert set(got) == {*want, bad}
    assert {tid: got[tid].output for tid in want} == want
    assert got[bad].outcome == "exception" and not got[bad].successful()
    with pytest.raises(ValueError, match="boom") as e:
        _ = got[bad].value
    assert "in fail" in e.value.remote_traceback  # type: ignore[attr-defined]
    stats = sim.snapshot()
    assert stats.calls == 501 and stats.libraries_ready >= 1
