"""What runs on the workers when kubevine executes a dask graph.

Kept apart from :mod:`kubevine.dask` (the client-side scheduler) so that a library process
imports only what executing nodes needs: dask itself, cloudpickle, and this module.

A graph reaches a worker once, not once per node: every Coffea node carries the same
NanoEvents form (~340 KB pickled alone), while the whole graph pickles to ~380 KB. The
graph is a content-addressed buffer attached to every call as an input file, so the
worker fetches it into its cache once; a library process loads it from there once and
keeps it (by content hash). A call carries only keys and the values its nodes need. Should
a library not find the cached file (a cache directory it does not know), the call answers
``NEED_GRAPH`` and the client sends it again with the graph inside.

A warm library also keeps opened ROOT trees: ~86% of a Coffea partition's time is uproot
re-reading the file's TTree metadata. :func:`enable_file_cache` makes uproot's dask
reader reuse an opened tree (checked against the file's size and modification time), so
a file's metadata is read once per library process instead of once per partition.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import cloudpickle

from kubevine import results

Key = Hashable
NEED_GRAPH = "need-graph"
OK = "ok"
GRAPH_FILE = "kubevine-dask-graph.pkl"  # the graph's name in a PythonTask's sandbox ("tasks" mode)
GRAPHS_KEPT = 4  # graphs a library process keeps (least recently used go first)

_lock = threading.Lock()
_graphs: OrderedDict[str, Mapping[Key, Any]] = OrderedDict()


# -- values ------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """A value as bytes: plain pickle when it can (fast), cloudpickle otherwise (lambdas...)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        data: bytes = cloudpickle.dumps(value, protocol=5)
        return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# -- running nodes -----------------------------------------------------------------------


def run_nodes(
    graph: Mapping[Key, Any], keys: list[Key], inputs: Mapping[Key, bytes], outputs: Iterable[Key]
) -> dict[Key, bytes]:
    """Run ``keys`` (in this order) of ``graph``; return the pickled values of ``outputs``.

    Dependencies come from ``inputs`` (pickled values computed elsewhere), from nodes run
    earlier in this batch, or from the graph's own data nodes. A value is dropped as soon
    as the last node of the batch that needs it has run, unless it is an output.
    """
    keep = set(outputs)
    data: dict[Key, Any] = {k: loads(v) for k, v in inputs.items()}
    uses: dict[Key, int] = {}
    for k in keys:
        for d in graph[k].dependencies:
            uses[d] = uses.get(d, 0) + 1
    for k in keys:
        node = graph[k]
        deps = node.dependencies
        args = {d: data[d] if d in data else graph[d]() for d in deps}
        try:
            data[k] = node(args)
        except Exception as e:
            e.add_note(f"(raised by dask key {k!r}, run by kubevine)")
            raise
        del args
        for d in deps:
            uses[d] -= 1
            if uses[d] == 0 and d not in keep:
                data.pop(d, None)
    return {k: dumps(data[k]) for k in keep}


def _cache_dirs() -> list[str]:
    """Where this library's worker keeps its file cache (a library runs in <workdir>/libraries)."""
    env = os.environ.get("KUBEVINE_CACHE_DIR")
    return [d for d in (env, os.path.join(os.path.dirname(os.getcwd()), "cache")) if d]


def _graph(graph_id: str, blob: bytes | None) -> Mapping[Key, Any] | None:
    """The graph named ``graph_id`` (its cache name): held, sent along, or in the worker's cache."""
    with _lock:
        g = _graphs.get(graph_id)
        if g is not None:
            _graphs.move_to_end(graph_id)
            return g
    if blob is None:
        try:
            places = [str(results.input_path(GRAPH_FILE))]  # the call's own input
        except FileNotFoundError:
            places = []
        for path in places + [os.path.join(d, graph_id) for d in _cache_dirs()]:
            try:
                with open(path, "rb") as f:
                    blob = f.read()
                break
            except OSError:
                continue
        else:
            return None
    loaded: Mapping[Key, Any] = loads(blob)
    with _lock:
        _graphs[graph_id] = loaded
        while len(_graphs) > GRAPHS_KEPT:
            _graphs.popitem(last=False)
    return loaded


class NeedGraph(LookupError):
    """A batch whose values stay on the worker found no graph: it cannot answer NEED_GRAPH."""


def kept_inputs(inputs: dict[Key, bytes], kept: Mapping[str, list[Key]] | None) -> dict[Key, bytes]:
    """``inputs`` plus the values other batches left on workers: ``kept`` maps the name of
    each such batch's value file (an input of this call) to the keys needed from it."""
    if not kept:
        return inputs
    merged = dict(inputs)
    for name, wanted in kept.items():
        with open(results.input_path(name), "rb") as f:
            reply = cloudpickle.load(f)  # (OK, {key: pickled value}, seconds), as returned
        values = reply[1]
        for k in wanted:
            merged[k] = values[k]
    return merged


def kubevine_dask_batch(
    graph_id: str,
    blob: bytes | None,
    keys: list[Key],
    inputs: dict[Key, bytes],
    outputs: list[Key],
    kept: Mapping[str, list[Key]] | None = None,
    keep: bool = False,
) -> tuple[Any, ...]:
    """A library function: run a batch of nodes of graph ``graph_id`` (a cache name).

    Returns ``(OK, {key: pickled value}, seconds spent running nodes)``, or ``(NEED_GRAPH,)``
    (raised as :class:`NeedGraph` when ``keep``: the reply stays on the worker, unread).
    A node's exception propagates unchanged (with a note naming its key).
    """
    graph = _graph(graph_id, blob)
    if graph is None:
        if keep:
            raise NeedGraph(f"dask graph {graph_id} is not in this worker's cache")
        return (NEED_GRAPH,)
    enable_file_cache()
    t0 = time.perf_counter()
    out = run_nodes(graph, keys, kept_inputs(inputs, kept), outputs)
    return (OK, out, time.perf_counter() - t0)


def kubevine_dask_task(
    graph_id: str,
    keys: list[Key],
    inputs: dict[Key, bytes],
    outputs: list[Key],
    kept: Mapping[str, list[Key]] | None = None,
) -> tuple[Any, ...]:
    """A PythonTask ("tasks" mode): the graph is the sandbox's input file ``GRAPH_FILE``."""
    with open(GRAPH_FILE, "rb") as f:
        graph = pickle.load(f)
    t0 = time.perf_counter()
    out = run_nodes(graph, keys, kept_inputs(inputs, kept), outputs)
    return (OK, out, time.perf_counter() - t0)


def library_setup(file_cache: int) -> dict[str, Any]:
    """The dask library's context setup: how many opened ROOT trees it may keep."""
    global _file_cache_size
    _file_cache_size = max(0, int(file_cache))
    return {"file_cache": _file_cache_size}


# -- opened ROOT files, kept across calls ----------------------------------------------------

_file_cache_size = 0
_opening = threading.local()
_trees: OrderedDict[tuple[Any, ...], tuple[tuple[int, int] | None, Any]] = OrderedDict()
_patched = False


def _stamp(path: str) -> tuple[int, int] | None:
    """(size, mtime) of a local file; None for a URL (kept as long as the cache keeps it)."""
    if "://" in path and not path.startswith("file://"):
        return None
    st = os.stat(path.removeprefix("file://"))
    return (st.st_size, st.st_mtime_ns)


def enable_file_cache() -> bool:
    """Make uproot's dask reader reuse opened trees in this process (if uproot is loaded).

    Only the opening done by ``uproot._dask._UprootOpenAndRead`` (what
    ``NanoEventsFactory.from_root(..., mode="dask")`` and ``uproot.dask`` read partitions
    with) goes through the cache; a user's own ``uproot.open`` is untouched.
    """
    global _patched
    if _patched or _file_cache_size <= 0:
        return _patched
    import sys

    if "uproot" not in sys.modules:
        return False
    import uproot

    reader = getattr(getattr(uproot, "_dask", None), "_UprootOpenAndRead", None)
    util = getattr(uproot, "_util", None)
    original = getattr(util, "regularize_object_path", None)
    if reader is None or util is None or original is None:
        return False
    with _lock:
        if _patched:
            return True
        util.regularize_object_path = _cached_opener(original)
        reader.__call__ = _opening_wrapper(reader.__call__)
        _patched = True
    return True


def _opening_wrapper(call: Callable[..., Any]) -> Callable[..., Any]:
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        _opening.on = True
        try:
            return call(self, *args, **kwargs)
        finally:
            _opening.on = False

    return __call__


def _cached_opener(original: Callable[..., Any]) -> Callable[..., Any]:
    def regularize_object_path(
        file_path: Any, object_path: Any, custom_classes: Any, allow_missing: Any, options: Any
    ) -> Any:
        if not getattr(_opening, "on", False) or not isinstance(file_path, str):
            return original(file_path, object_path, custom_classes, allow_missing, options)
        try:
            extra = pickle.dumps((custom_classes, sorted(options.items())))
            stamp = _stamp(file_path)
        except Exception:  # unpicklable options, a file we cannot stat: no caching
            return original(file_path, object_path, custom_classes, allow_missing, options)
        key = (file_path, object_path, allow_missing, extra)
        with _lock:
            hit = _trees.get(key)
            if hit is not None and hit[0] == stamp:
                _trees.move_to_end(key)
                return hit[1]
        tree = original(file_path, object_path, custom_classes, allow_missing, options)
        with _lock:
            _trees[key] = (stamp, tree)
            while len(_trees) > _file_cache_size:
                _trees.popitem(last=False)
        return tree

    return regularize_object_path


def file_cache_info() -> dict[str, int]:
    """How many opened trees this process holds (for tests and diagnostics)."""
    return {"trees": len(_trees), "limit": _file_cache_size}
