"""The scheduling core without any server: graphs in, batches and releases out."""

from __future__ import annotations

import operator

import dask
import pytest
from dask._task_spec import Alias, DataNode, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph
from daskgraphs import tree_reduction

from kubevine.dask import Graph, Options, Planner, nested_get


def run_all(p: Planner, width: int, limit: int) -> list[list[object]]:
    batches = []
    while not p.finished():
        formed = []
        while (b := p.take(width, limit)) is not None:
            formed.append(b)
        assert formed, "nothing ready although nodes are left: a stall"
        for b in formed:
            p.done(b)
            batches.append(b.keys)
    return batches


def test_a_batch_takes_the_parents_its_leaves_make_computable() -> None:
    dsk, root = tree_reduction(8)
    g = Graph.build(dsk, root)
    p = Planner(g.deps, g.priority, g.requested)
    b = p.take(width=4, limit=100)
    assert b is not None
    # four leaves in depth-first order, their two parents and the grandparent: 7 nodes,
    # and only the grandparent leaves the batch
    assert len(b.keys) == 7 and b.inputs == [] and b.outputs == [("tree-sum-2", 0)]
    for k in b.keys:  # a valid order: every dependency comes first
        assert all(d in b.keys[: b.keys.index(k)] for d in g.deps[k])


def test_every_node_runs_once_in_dependency_order_whatever_the_batch_sizes() -> None:
    dsk, root = tree_reduction(300)
    for width, limit in [(1, 1), (1, 2), (7, 20), (5000, 10000)]:
        g = Graph.build(dsk, root)
        seen: list[object] = []
        for keys in run_all(Planner(g.deps, g.priority, g.requested), width, limit):
            for k in keys:
                assert all(d in seen or d in keys[: keys.index(k)] for d in g.deps[k])
            seen += keys
        assert sorted(map(str, seen)) == sorted(map(str, dsk)) and len(seen) == len(set(seen))


def test_a_value_is_released_when_its_last_dependent_is_done_but_requested_keys_stay() -> None:
    dsk = {"a": 1, "b": (operator.add, "a", 1), "c": (operator.add, "b", 1), "d": (operator.add, "b", "c")}
    g = Graph.build(dsk, ["d", "b"])
    p = Planner(g.deps, g.priority, g.requested)
    b1 = p.take(1, 1)
    assert b1 is not None and b1.keys == ["b"] and b1.outputs == ["b"]
    assert p.done(b1) == []  # b is still needed by c and d
    b2 = p.take(1, 1)
    assert b2 is not None and b2.keys == ["c"]
    assert p.done(b2) == []
    b3 = p.take(1, 1)
    assert b3 is not None and b3.keys == ["d"]
    assert sorted(p.done(b3)) == ["c"]  # b was asked for: never released


def test_the_graph_is_culled_to_the_requested_keys_and_data_nodes_stay_inside_it() -> None:
    dsk = {"x": 1, "y": (operator.add, "x", 1), "unused": (operator.truediv, 1, 0)}
    g = Graph.build(dsk, ["y"])
    assert set(g.nodes) == {"x", "y"} and g.data == {"x"} and g.deps == {"y": ()}


def test_a_cycle_and_a_missing_key_are_clear_errors() -> None:
    with pytest.raises(RuntimeError, match="cycle"):
        Graph.build({"a": (operator.neg, "b"), "b": (operator.neg, "a")}, "a")
    with pytest.raises(KeyError, match="not in the graph"):
        Graph.build({"a": 1}, "b")


def test_every_graph_form_dask_uses_is_understood() -> None:
    legacy = {"a": 1, "b": (operator.add, "a", 2)}
    spec = {"a": DataNode("a", 1), "b": Task("b", operator.add, TaskRef("a"), 2), "c": Alias("c", "b")}
    hlg = HighLevelGraph.from_collections("b", legacy)
    for dsk, keys in [(legacy, "b"), (spec, ["c", ["b"]]), (hlg, ["b"])]:
        g = Graph.build(dsk, keys)
        assert set(g.requested) <= set(g.nodes)
    delayed = dask.delayed(operator.add)(1, 2)
    g = Graph.build(delayed.__dask_graph__(), delayed.__dask_keys__())
    assert len(g.nodes) >= 1


class ExprLike:
    """What dask >= 2025.4 hands a custom scheduler from dask.compute: not a mapping (no
    ``.items()``), but an expression that renders its graph on request."""

    def __init__(self, dsk: dict[object, object]) -> None:
        self._dsk = dsk

    def __dask_graph__(self) -> HighLevelGraph:
        return HighLevelGraph.from_collections("expr", self._dsk)


def test_an_expression_that_is_not_a_mapping_is_asked_for_its_graph() -> None:
    g = Graph.build(ExprLike({"a": 1, "b": (operator.add, "a", 2)}), ["b"])
    assert g.requested == ["b"] and set(g.nodes) == {"a", "b"}
    with pytest.raises(TypeError, match="not a dask graph"):
        Graph.build(object(), ["b"])


def test_results_mirror_the_nesting_of_the_keys() -> None:
    values = {"a": 1, ("b", 0): 2}
    assert nested_get([["a"], [("b", 0), "a"]], values) == ((1,), (2, 1))
    assert nested_get("a", values) == 1


def test_options_take_daskvine_names_and_reject_typos() -> None:
    o = Options.parse({"lazy_transfers": False, "progress_disable": True, "prune_depth": 0, "num_workers": 4})
    assert (o.worker_transfers, o.progress, o.prune) == (False, False, False)
    with pytest.raises(TypeError, match="unknown option 'task_mod'"):
        Options.parse({"task_mod": "tasks"})
    with pytest.raises(ValueError, match="task_mode"):
        Options.parse({"task_mode": "threads"})
    with pytest.raises(ValueError, match="not gpu"):
        Options.parse({"resources": {"gpu": 1}})
