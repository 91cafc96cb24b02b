"""The task lifecycle is a table: every listed move is legal, every other one raises."""

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
    assert "lost" in TRANSITIONS[(TaskState.DONE, TaskState.READY)]


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
    for (a, b), why in TRANSITIONS.items():
        assert f"{a.value} --> {b.value}: {why}" in mmd
