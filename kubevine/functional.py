"""TaskVine's functional helpers: ``m.map``, ``m.pair``, ``m.tree_reduce``.

Each becomes function calls in a warm library rather than a process per element: a library
holding just ``fn`` for a plain map (one call per element), and kubevine's own small library
(:data:`LIBRARY`, direct mode) for chunks, pairs and reductions, where each call carries ``fn``
with its chunk. Results come back in order; the first call that raised raises here, with its
remote traceback.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubevine.client import Manager
    from kubevine.serverless import FunctionCall

LIBRARY = "kubevine-functional"


# -- what runs in the library (importable on every worker: pickled by reference) --------


def apply_each(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(x) for x in chunk]


def apply_whole(fn: Callable[[list[Any]], Any], chunk: list[Any]) -> Any:
    return fn(chunk)


# -- on the client -------------------------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"chunksize must be at least 1, not {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _library(m: Manager) -> str:
    from kubevine.serverless import Library

    if LIBRARY not in m._st.libraries:
        m.install_library(Library(LIBRARY, [apply_each, apply_whole], exec_mode="direct"))
    return LIBRARY


def run_calls(m: Manager, calls: list[FunctionCall], progress: bool, desc: str) -> list[Any]:
    """Submit ``calls``, wait for all, and return their values in order."""
    from kubevine.progress import wait_futures

    for c in calls:
        _ = c.future  # collected through their futures, not wait()
    for c in calls:
        m.submit(c)
    wait_futures([c.future for c in calls], progress=progress, desc=desc)
    return [c.value for c in calls]


def map_chunks(
    m: Manager, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int, retries: int, progress: bool
) -> list[Any]:
    from kubevine.serverless import FunctionCall

    lib = _library(m)
    calls = [FunctionCall(lib, "apply_each", fn, c) for c in chunks(list(items), chunksize)]
    for c in calls:
        c.set_retries(retries)
    return list(itertools.chain.from_iterable(run_calls(m, calls, progress, getattr(fn, "__name__", "map"))))


def pair(
    m: Manager,
    fn: Callable[[tuple[Any, Any]], Any],
    first: Iterable[Any],
    second: Iterable[Any],
    chunksize: int,
) -> list[Any]:
    """``[fn((a, b)) for a, b in itertools.product(first, second)]`` (TaskVine's ``pair``)."""
    return map_chunks(m, fn, list(itertools.product(first, second)), chunksize, 0, False)


def tree_reduce(m: Manager, fn: Callable[[list[Any]], Any], items: Iterable[Any], chunksize: int) -> Any:
    """Reduce ``items`` with ``fn`` (it receives a list of up to ``chunksize`` values) in
    rounds, each round's calls running at once, until one value is left."""
    from kubevine.serverless import FunctionCall

    if chunksize < 2:
        raise ValueError(f"tree_reduce needs a chunksize of at least 2, not {chunksize}")
    level = list(items)
    if not level:
        raise ValueError("tree_reduce of nothing")
    lib = _library(m)
    while len(level) > 1:
        calls = [FunctionCall(lib, "apply_whole", fn, c) for c in chunks(level, chunksize)]
        level = run_calls(m, calls, False, "tree_reduce")
    return level[0]
