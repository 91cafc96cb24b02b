"""The task lifecycle is a table that drives the moves: every listed move is legal and has a
reason and an effect, every other one raises, and the diagram shows exactly the table."""

from __future__ import annotations

import itertools

import pytest

from kubevine.manager.states import FINAL, TRANSITIONS, IllegalTransition, TaskState, check_move


@pytest.mark.parametrize(("frm", "to"), sorted(TRANSITIONS, key=str))
def test_every_listed_move_is_legal_and_has_a_reason(frm: TaskState, to: TaskState) -> None:
    assert check_move(frm, to)


ILLEGAL = [(a, b) for a, b in itertools.product(TaskState, TaskState) if (a, b) not in TRANSITIONS]


@pytest.mark.parametrize(("frm", "to"), ILLEGAL)
def test_every_other_move_raises(frm: TaskState, to: TaskState) -> None:
    with pytest.raises(IllegalTransition, match=f"from {frm.value} to {to.value}"):
        check_move(frm, to)


def test_final_states_have_no_way_out_but_regenerating_a_lost_temp() -> None:
    assert [m for m in TRANSITIONS if m[0] in FINAL] == [(TaskState.DONE, TaskState.READY)]
    assert "lost" in TRANSITIONS[(TaskState.DONE, TaskState.READY)].reason


def test_every_state_is_reachable_from_waiting() -> None:
    seen = {TaskState.WAITING}
    frontier = [TaskState.WAITING]
    while frontier:
        s = frontier.pop()
        for a, b in TRANSITIONS:
            if a == s and b not in seen:
                seen.add(b)
                frontier.append(b)
    assert seen == set(TaskState)


def test_the_lifecycle_diagram_shows_exactly_the_table() -> None:
    from pathlib import Path

    mmd = (Path(__file__).resolve().parents[2] / "docs" / "task-lifecycle.mmd").read_text()
    edges = {
        tuple(line.strip().split(":", 1)[0].split(" --> "))
        for line in mmd.splitlines()
        if " --> " in line and "[*]" not in line
    }
    assert edges == {(a.value, b.value) for a, b in TRANSITIONS}
    for (a, b), move in TRANSITIONS.items():
        assert f"{a.value} --> {b.value}: {move.reason}" in mmd


def test_a_move_runs_the_effect_the_table_names_for_it() -> None:
    """Ready queues the task, retrying counts a retry, a final state hands the client its result."""
    from kubevine.ids import ClientId, TaskId
    from kubevine.manager.core import Core
    from kubevine.manager.entries import TaskEntry
    from kubevine.protocol import Outcome, TaskSpec

    core = Core(now=5.0)
    t = TaskEntry(TaskSpec(id=TaskId(1), command="true"), None, ClientId("c"), TaskState.WAITING, 0)
    core.tasks[t.spec.id] = t
    core.life.admit(t)
    core.life.move(t, TaskState.READY, "submitted")
    assert core.ready == [(0, 0, 1)] and t.worker is None
    core.ready.clear()
    core.life.move(t, TaskState.DISPATCHED)
    core.life.retry(t, "attempt 1 exit_nonzero", "")
    assert core.totals["retried"] == 1 and core.ready and t.state == TaskState.READY
    core.life.finish(t, TaskState.CANCELLED, Outcome.CANCELLED, error="cancelled by the client")
    assert core.totals["cancelled"] == 1 and core.life.undelivered[ClientId("c")][0][0].state == "cancelled"
    assert [s for _, s, _ in core.story(TaskId(1))] == [
        "ready",
        "dispatched",
        "retrying",
        "ready",
        "cancelled",
    ]
    assert core.story(TaskId(1))[1][2] == "placed on a worker with room"  # no cause given: the table's reason
    assert core.counts[TaskState.CANCELLED] == 1 and sum(core.counts.values()) == 1
    with pytest.raises(IllegalTransition, match="from cancelled to running"):
        core.life.move(t, TaskState.RUNNING, "started")
