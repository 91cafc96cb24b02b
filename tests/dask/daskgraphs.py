"""Graphs and node functions for the dask tests (pickled by value: workers cannot import this file)."""

from __future__ import annotations

import operator
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np


class NodeFailed(Exception):
    """Raised by a node on purpose; the test expects this very class back."""


def tree_reduction(n_leaves: int, name: str = "tree") -> tuple[dict[Any, Any], Any]:
    """A binary tree: ``n_leaves`` leaves, then pairwise sums up to one root (2n - 1 nodes)."""
    dsk: dict[Any, Any] = {}
    level = [(f"{name}-leaf", i) for i in range(n_leaves)]
    for i, k in enumerate(level):
        dsk[k] = (operator.mul, i, 3)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level), 2):
            k = (f"{name}-sum-{depth}", j // 2)
            pair = level[j : j + 2]
            dsk[k] = (operator.add, *pair) if len(pair) == 2 else (operator.pos, *pair)
            nxt.append(k)
        level = nxt
    return dsk, level[0]


def mix(layer: int, *parents: int) -> int:
    """Order-sensitive, so a wrong dependency or argument order changes the result."""
    acc = layer
    for p in parents:
        acc = (acc * 1_000_003 + p) % 2_147_483_647
    return acc


def diamonds(width: int, depth: int) -> tuple[dict[Any, Any], list[Any]]:
    """Layers where each node depends on three overlapping nodes of the layer before."""
    dsk: dict[Any, Any] = {("d-0", i): (mix, 0, i) for i in range(width)}
    for layer in range(1, depth):
        for i in range(width):
            parents = [(f"d-{layer - 1}", (i + o) % width) for o in (0, 1, 3)]
            dsk[(f"d-{layer}", i)] = (mix, layer, *parents)
    dsk["d-top"] = (mix, depth, *[(f"d-{depth - 1}", i) for i in range(width)])
    return dsk, ["d-top", [(f"d-{depth - 1}", 0), (f"d-{depth - 1}", width - 1)]]


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise NodeFailed(f"node {x} fails on purpose")
    return x


def slow(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def big_array(i: int, mb: int) -> np.ndarray:
    return np.full(mb * 131072, float(i))  # mb MiB of float64


def total(a: np.ndarray) -> float:
    return float(a.sum())


def summed(*xs: float) -> float:
    return float(sum(xs))


def mark(directory: str, value: int) -> int:
    """Leave a trace of each execution (the worker shares this machine's disk with the test)."""
    Path(directory, f"{value}-{uuid.uuid4().hex}").touch()
    return value + os.getpid() * 0
