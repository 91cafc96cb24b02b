"""kubevine as a dask scheduler: ``dask.compute(x, scheduler=m.get)``.

Analysts do not write tasks: they write Coffea, dask-awkward and hist code and call
``.compute()``. This module turns whatever graph dask hands a custom scheduler (a dict of
legacy tuples, a HighLevelGraph, ``dask._task_spec`` nodes, or, from dask 2025.4 on, an
expression with ``__dask_graph__``) into function calls on warm libraries, and gives back
exactly what dask's synchronous scheduler would.

Why it is fast where per-node tasks are not:

- **The graph travels once.** Every Coffea node carries the same NanoEvents form (~340 KB
  pickled alone; the whole graph pickles to ~380 KB). The graph is pickled once into a
  content-addressed buffer that every call names as an input file: each worker fetches it
  once, each library process loads it once, and a call carries only keys and the input
  values its nodes need.
- **Nodes travel in batches.** Ready nodes are grouped into one call, sized from measured
  node times so that a call holds a few milliseconds of work (or a single node when nodes
  are slow). A batch also takes the nodes that become computable inside it (a reduction's
  parents, a chain's next link), so their intermediates never leave the worker.
- **Libraries stay warm.** Modules are imported once per library process, and opened ROOT
  trees are kept across calls (see :mod:`kubevine.dask.execute`).

Scheduling is a pure core (:class:`Planner`: ready set, batches, releases) wrapped in a thin
shell (:class:`_Run`) that submits calls and reacts to their results.
"""

from __future__ import annotations

import functools
import heapq
import io
import logging
import math
import queue
import sys
import sysconfig
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle

from kubevine.dask import execute as dask_exec
from kubevine.dask.execute import NEED_GRAPH, OK, Key
from kubevine.digest import sha256_bytes
from kubevine.protocol import FileKind, Outcome
from kubevine.results import RemoteError
from kubevine.serverless import FunctionCall, Library, PythonTask, _by_value

if TYPE_CHECKING:
    from kubevine.client import Manager
    from kubevine.task import File

log = logging.getLogger(__name__)

TARGET_CALL_SECONDS = {"function-calls": 0.02, "tasks": 2.0}  # work per call once node times are known
MAX_BATCH = 5000  # nodes in one call, at most
ABSORB = 16  # nodes a call may hold beyond its ready ones when other slots have work enough
_SITE = tuple(p for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} if p)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """``m.get`` options; names follow TaskVine's DaskVine where it has them (see docs/dask.md)."""

    task_mode: str = "function-calls"  # or "tasks": each batch a PythonTask (fresh interpreter)
    worker_transfers: bool = True  # keep intermediates on workers as far as the engine allows
    resources: Mapping[str, float] = field(default_factory=dict)  # per task ("tasks" mode)
    lib_resources: Mapping[str, float] = field(default_factory=dict)  # cores, memory, disk, slots
    lib_modules: tuple[str, ...] = ()  # imported when the library starts, besides the graph's
    retries: int = 5  # extra attempts of a failed call (any failure, as DaskVine)
    progress: bool = False  # a bar (terminal or Jupyter only)
    prune: bool = True  # drop intermediate values once their last dependent has finished
    batch_size: int | None = None  # nodes per call at most (None: sized from node times)
    max_pending: int | None = None  # calls in flight at once (None: every ready batch)
    file_cache: int = 64  # opened ROOT trees each library process keeps (0: none)
    # DaskVine's: checkpoint_fn(dag, key) -> bool brings that key's value back to the client
    # (safe from the loss of its worker); extra_files {File: remote name} go to every call
    checkpoint_fn: Callable[[Any, Key], bool] | None = None
    extra_files: Mapping[Any, str] = field(default_factory=dict)
    lib_extra_functions: tuple[Callable[..., Any], ...] = ()

    ALIASES = {
        "lazy_transfers": "worker_transfers",
        "hoisting_modules": "lib_modules",
        "import_modules": "lib_modules",
    }
    # accepted for dask and DaskVine compatibility, without effect here
    IGNORED = frozenset(
        {
            "num_workers",
            "pool",
            "chunksize",
            "callbacks",
            "submit_per_cycle",
            "task_priority_mode",
            "scheduling_mode",
            "env_vars",
            "low_memory_mode",
            "verbose",
            # DaskVine's, about TaskVine's own engine: categories, environments, prefixes
            "resources_mode",
            "environment",
            "env_per_task",
            "lib_command",
            "progress_label",
            "prune_files",
            "wrapper",
            "wrapper_proc",
        }
    )

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        kw: dict[str, Any] = {}
        names = set(cls.__dataclass_fields__)
        for name, value in options.items():
            name = cls.ALIASES.get(name, name)
            if name in names:
                kw[name] = value
            elif name == "progress_disable":
                kw["progress"] = not value
            elif name == "prune_depth":
                kw["prune"] = int(value) > 0
            elif name in cls.IGNORED:
                log.info("dask option %s has no effect on kubevine", name)
            else:
                raise TypeError(
                    f"m.get() got an unknown option {name!r}; options are: {', '.join(sorted(names))}"
                )
        opts = cls(**kw)
        if opts.task_mode not in TARGET_CALL_SECONDS:
            raise ValueError(f"task_mode must be 'function-calls' or 'tasks', not {opts.task_mode!r}")
        if opts.retries < 0 or (opts.batch_size is not None and opts.batch_size < 1):
            raise ValueError("retries must be >= 0 and batch_size >= 1")
        for what, given, allowed in (
            ("resources", opts.resources, {"cores", "memory", "disk", "gpus"}),
            ("lib_resources", opts.lib_resources, {"cores", "memory", "disk", "slots"}),
        ):
            unknown = set(given) - allowed
            if unknown:
                takes, bad = ", ".join(sorted(allowed)), ", ".join(sorted(unknown))
                raise ValueError(f"{what} takes {takes}; not {bad}")
        if isinstance(opts.lib_modules, str):
            object.__setattr__(opts, "lib_modules", (opts.lib_modules,))
        return opts


# --------------------------------------------------------------------------- graphs


def flatten(keys: Any) -> Iterator[Key]:
    """The keys of a (possibly nested) list of keys, in order."""
    if isinstance(keys, list):
        for k in keys:
            yield from flatten(k)
    else:
        yield keys


def nested_get(keys: Any, values: Mapping[Key, Any]) -> Any:
    """Values in the shape of ``keys``: lists become tuples, as dask's own schedulers do."""
    if isinstance(keys, list):
        return tuple(nested_get(k, values) for k in keys)
    return values[keys]


def to_task_spec(dsk: Any) -> dict[Key, Any]:
    """Whatever dask handed us, as a dict of ``dask._task_spec`` nodes.

    Plain dicts (legacy tuples, task-spec nodes or both), HighLevelGraphs, and anything with
    ``__dask_graph__`` (dask ≥ 2025.4 passes an expression such as ``_HLGExprSequence``, which
    is not a mapping: that is what breaks schedulers that call ``dsk.items()``).
    """
    try:
        from dask._task_spec import convert_legacy_graph
        from dask.utils import ensure_dict
    except ImportError as e:  # pragma: no cover - dask < 2024.12
        raise ImportError("kubevine's dask scheduler needs dask >= 2024.12 (dask._task_spec)") from e
    if not isinstance(dsk, Mapping):
        graph = getattr(dsk, "__dask_graph__", None)
        if graph is None:
            raise TypeError(f"not a dask graph: {type(dsk).__name__}")
        dsk = graph()
    converted: dict[Key, Any] = convert_legacy_graph(ensure_dict(dsk))
    return converted


def _sortkey(k: Key) -> tuple[Any, Any]:
    return (k[0], k[1:]) if isinstance(k, tuple) and k else (k, ())


def _sorted(keys: Iterable[Key]) -> list[Key]:
    out = list(keys)
    if len(out) > 1:
        try:
            out.sort(key=_sortkey)
        except TypeError:
            out.sort(key=str)
    return out


@dataclass
class Graph:
    """A graph culled to what the requested keys need, with a run order."""

    nodes: dict[Key, Any]  # the needed task-spec nodes (what travels to workers)
    deps: dict[Key, tuple[Key, ...]]  # nodes to run -> their dependencies among nodes to run
    data: set[Key]  # data nodes: values that live inside the graph
    priority: dict[Key, int]  # depth-first post-order from the requested keys
    requested: list[Key]
    checkpoints: list[Key] = field(default_factory=list)  # also brought back (checkpoint_fn)

    @classmethod
    def build(cls, dsk: Any, keys: Any) -> Graph:
        from dask._task_spec import DataNode

        all_nodes = to_task_spec(dsk)
        requested = list(dict.fromkeys(flatten(keys)))
        order: dict[Key, int] = {}
        active: set[Key] = set()
        for root in requested:
            if root in order:
                continue
            if root not in all_nodes:
                raise KeyError(f"requested key {root!r} is not in the graph")
            stack = [(root, iter(_sorted(all_nodes[root].dependencies)))]
            active.add(root)
            while stack:  # iterative post-order: a chain of 100,000 nodes is fine
                k, it = stack[-1]
                for d in it:
                    if d in order:
                        continue
                    if d in active:
                        raise RuntimeError(f"the graph has a cycle through {d!r}")
                    if d not in all_nodes:
                        raise KeyError(f"{d!r}, a dependency of {k!r}, is not in the graph")
                    active.add(d)
                    stack.append((d, iter(_sorted(all_nodes[d].dependencies))))
                    break
                else:
                    stack.pop()
                    active.discard(k)
                    order[k] = len(order)
        nodes = {k: all_nodes[k] for k in order}
        data = {k for k, n in nodes.items() if isinstance(n, DataNode)}
        deps = {
            k: tuple(d for d in n.dependencies if d not in data) for k, n in nodes.items() if k not in data
        }
        return cls(nodes, deps, data, order, requested)


# --------------------------------------------------------------------------- the pure core


@dataclass
class Batch:
    """Nodes run by one call, in a valid order; what it needs and what it gives back."""

    id: int
    keys: list[Key]
    inputs: list[Key]  # values computed by other batches
    outputs: list[Key]  # values someone outside the batch needs (or the user asked for)


WAITING, READY, RUNNING, DONE = range(4)


class Planner:
    """Which nodes run together, and when a value is no longer needed. No I/O.

    ``take(width, limit)`` forms a batch: up to ``width`` ready nodes (highest priority
    first), plus every node that becomes computable from them, up to ``limit`` nodes in all.
    ``done(batch)`` records it finished; returns the values nobody needs any more.
    """

    def __init__(
        self,
        deps: Mapping[Key, tuple[Key, ...]],
        priority: Mapping[Key, int],
        requested: Iterable[Key],
        *,
        return_all: bool = False,
    ) -> None:
        self.deps = deps
        self.priority = priority
        self.return_all = return_all
        self.dependents: dict[Key, list[Key]] = {k: [] for k in deps}
        for k, ds in deps.items():
            for d in ds:
                self.dependents[d].append(k)
        self.requested = {k for k in requested if k in deps}
        self.remaining = {k: len(ds) for k, ds in deps.items()}
        self.refs = {k: len(self.dependents[k]) + (k in self.requested) for k in deps}
        self.state = dict.fromkeys(deps, WAITING)
        self.ready: list[tuple[int, Key]] = []
        for k, n in self.remaining.items():
            if n == 0:
                self.state[k] = READY
                self.ready.append((priority[k], k))
        heapq.heapify(self.ready)
        self.left = len(deps)
        self._ids = 0

    @property
    def n_ready(self) -> int:
        return len(self.ready)

    def finished(self) -> bool:
        return self.left == 0

    def take(self, width: int, limit: int) -> Batch | None:
        if not self.ready:
            return None
        keys: list[Key] = []
        inside: set[Key] = set()
        local: dict[Key, int] = {}
        absorb: list[tuple[int, Key]] = []
        picked = 0
        while len(keys) < limit:
            if absorb:
                _, k = heapq.heappop(absorb)
            elif picked < width and self.ready:
                _, k = heapq.heappop(self.ready)
                picked += 1
            else:
                break
            keys.append(k)
            inside.add(k)
            self.state[k] = RUNNING
            for d in self.dependents[k]:
                n = local.get(d, self.remaining[d]) - 1
                local[d] = n
                if n == 0:
                    heapq.heappush(absorb, (self.priority[d], d))
        inputs = {d for k in keys for d in self.deps[k] if d not in inside}
        outputs = [
            k
            for k in keys
            if self.return_all or k in self.requested or any(d not in inside for d in self.dependents[k])
        ]
        self._ids += 1
        return Batch(self._ids, keys, _sorted(inputs), outputs)

    def done(self, batch: Batch) -> list[Key]:
        released: list[Key] = []
        for k in batch.keys:
            self.state[k] = DONE
        self.left -= len(batch.keys)
        for k in batch.keys:
            for d in self.dependents[k]:
                self.remaining[d] -= 1
                if self.remaining[d] == 0 and self.state[d] == WAITING:
                    self.state[d] = READY
                    heapq.heappush(self.ready, (self.priority[d], d))
            for d in self.deps[k]:
                self.refs[d] -= 1
                if self.refs[d] == 0:
                    released.append(d)
        return released


# --------------------------------------------------------------------------- pickling


class _GraphPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """Pickles a graph once, noting the installed packages its code comes from.

    Code from modules workers cannot import (notebooks, scripts, test files) is pickled by
    value; code from installed packages by reference, and those packages are imported when
    the library starts.
    """

    def __init__(self, buf: io.BytesIO) -> None:
        super().__init__(buf, protocol=5)
        self.modules: set[str] = set()
        self._seen: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)):
            mod = getattr(obj, "__module__", None)
            if isinstance(mod, str) and mod not in self._seen:
                self._seen.add(mod)
                _by_value(obj)
                path = getattr(sys.modules.get(mod), "__file__", None) or ""
                if path.startswith(_SITE):
                    self.modules.add(mod.split(".")[0])
        return super().reducer_override(obj)


def pickle_graph(nodes: Mapping[Key, Any]) -> tuple[bytes, list[str]]:
    """(blob, top-level packages the graph's code comes from)."""
    buf = io.BytesIO()
    p = _GraphPickler(buf)
    p.dump(dict(nodes))
    return buf.getvalue(), sorted(p.modules)


# --------------------------------------------------------------------------- the shell


@dataclass
class RunStats:
    """What one ``get`` did (``kubevine.dask.last_stats(m)``)."""

    nodes: int = 0  # nodes run
    calls: int = 0  # calls (or tasks) submitted, resends included
    graph_bytes: int = 0  # the pickled graph
    graph_sends: int = 0  # calls that carried the graph inside (a library missed the cached file)
    bytes_to_workers: int = 0  # input values sent with calls (graph excluded)
    bytes_to_client: int = 0  # values that came back
    kept_calls: int = 0  # calls whose values stayed on their worker, read there by later calls
    seconds: float = 0.0
    node_seconds: float = 0.0  # time spent running nodes, as the workers measured it


@dataclass
class _ManagerState:
    """What outlives one ``get`` on a manager: installed libraries, who holds which graph."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    libraries: dict[str, str] = field(default_factory=dict)  # settings -> library name
    last: RunStats | None = None


_states: weakref.WeakKeyDictionary[Manager, _ManagerState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(m: Manager) -> _ManagerState:
    with _states_lock:
        st = _states.get(m)
        if st is None:
            st = _states[m] = _ManagerState()
        return st


def last_stats(m: Manager) -> RunStats | None:
    """Counters of the last ``get`` that finished on this manager."""
    return _state(m).last


def get(m: Manager, dsk: Any, keys: Any, **options: Any) -> Any:
    """Compute ``keys`` of ``dsk`` on kubevine's workers (``Manager.get``; see docs/dask.md)."""
    opts = Options.parse(options)
    graph = Graph.build(dsk, keys)
    if opts.checkpoint_fn is not None:
        from kubevine.compat import DaskVineDag

        dag = DaskVineDag(graph.deps)
        marked = [k for k in graph.deps if opts.checkpoint_fn(dag, k) and k not in graph.requested]
        graph.checkpoints = marked
    run = _Run(m, _state(m), graph, opts)
    values = run.execute()
    return nested_get(keys, values)


class _Run:
    """One ``get``: submit batches as their inputs exist, collect values, release the rest."""

    def __init__(self, m: Manager, state: _ManagerState, graph: Graph, opts: Options) -> None:
        self.m, self.st, self.g, self.opts = m, state, graph, opts
        self.planner = Planner(
            graph.deps,
            graph.priority,
            [*graph.requested, *graph.checkpoints],
            return_all=not opts.worker_transfers,
        )
        self.values: dict[Key, bytes] = {}
        self.results: queue.SimpleQueue[tuple[Batch, FunctionCall]] = queue.SimpleQueue()
        self.inflight: dict[int, PythonTask] = {}
        self.tag = f"kubevine-dask-{uuid.uuid4().hex[:12]}"
        self.est: float | None = None  # seconds per node, measured
        self.parallel = 1
        self.blob = b""
        self.graph_id = ""  # the graph's cache name
        self.library = ""
        self.graph_file: File | None = None
        self.stats = RunStats()
        # values left on workers (worker_transfers): batch id -> its value file, key -> batch
        # id; every file kept, to undeclare when the graph is done
        self.kept_files: dict[int, File] = {}
        self.where: dict[Key, int] = {}
        self.kept_all: list[File] = []

    # -- setup -----------------------------------------------------------------------

    def _prepare(self) -> None:
        self.blob, modules = pickle_graph(self.g.nodes)
        self.stats.graph_bytes = len(self.blob)
        self.graph_file = self.m.declare_buffer(self.blob)
        self.graph_id = self.graph_file.cache_name()
        workers = [w for w in self.m.status().workers if not w.draining]
        res = self.opts.resources if self.opts.task_mode == "tasks" else self.opts.lib_resources
        need = float(res.get("cores", 1) or 1)
        slots = int(self.opts.lib_resources.get("slots", 1)) if self.opts.task_mode != "tasks" else 1
        self.parallel = max(1, sum(int(w.resources.cores // need) * slots for w in workers))
        if self.opts.task_mode != "tasks":
            self.library = self._library(modules)

    def _library(self, modules: list[str]) -> str:
        """The dask library for these options: made and installed by the first graph that needs it.

        Later graphs reuse it whatever modules they need (a module not hoisted is imported by
        the first call that needs it, once per process), so switching between graphs never
        restarts a warm library. Its name is derived from what it is, so a new client (a
        re-run notebook) finds the library of the previous one warm on the workers.
        """
        res = dict(self.opts.lib_resources)
        mods = sorted(getattr(m, "__name__", m) for m in self.opts.lib_modules)  # names or modules
        extra = sorted(getattr(f, "__name__", repr(f)) for f in self.opts.lib_extra_functions)
        settings = (sorted(res.items()), self.opts.file_cache, mods, extra)
        with self.st.lock:
            name = self.st.libraries.get(repr(settings))
            if name is not None:
                return name
            hoist = sorted({"dask", *modules, *mods})
            what = repr((hoist, settings)).encode()
            name = f"kubevine-dask-{sha256_bytes(what)[:12]}"
            self.st.libraries[repr(settings)] = name
        lib = Library(
            name,
            [dask_exec.kubevine_dask_batch, *self.opts.lib_extra_functions],
            hoisting_modules=hoist,
            exec_mode="direct",
            library_context_info=(dask_exec.library_setup, [self.opts.file_cache], {}),
        )
        lib.set_cores(res.get("cores", 1))
        lib.set_memory(int(res.get("memory", 0)))
        lib.set_disk(int(res.get("disk", 0)))
        lib.set_function_slots(int(res.get("slots", 1)))
        self.m.install_library(lib)
        log.info("dask library %s installed (hoisting %s)", name, ", ".join(hoist))
        return name

    # -- the loop --------------------------------------------------------------------

    def execute(self) -> dict[Key, Any]:
        t0 = time.perf_counter()
        if self.g.deps:
            self._prepare()
            from kubevine.progress import bar

            with bar(len(self.g.deps), progress=self.opts.progress, desc="dask") as b:
                try:
                    self._loop(b.update)
                except BaseException:
                    self._cancel()
                    raise
                finally:
                    self._undeclare()
        out = {}
        for k in self.g.requested:
            out[k] = self.g.nodes[k]() if k in self.g.data else dask_exec.loads(self.values[k])
        self.stats.seconds = time.perf_counter() - t0
        self.st.last = self.stats
        log.info(
            "dask graph %s: %d nodes in %d calls, %.3fs (%.0f nodes/s)",
            self.graph_id,
            self.stats.nodes,
            self.stats.calls,
            self.stats.seconds,
            self.stats.nodes / max(self.stats.seconds, 1e-9),
        )
        return out

    def _loop(self, advance: Callable[[int], None]) -> None:
        self._submit_ready()
        while not self.planner.finished():
            try:
                batch, task = self.results.get(timeout=1.0)
            except queue.Empty:
                self.m._raise_if_broken()
                continue
            while True:
                advance(self._finished(batch, task))
                try:
                    batch, task = self.results.get_nowait()
                except queue.Empty:
                    break
            self._submit_ready()

    def _sizes(self) -> tuple[int, int]:
        """(ready nodes to start a batch with, nodes in it at most)."""
        size = self.opts.batch_size
        if size is not None:
            cap = size
        elif self.est is None:
            # calls: probe with single nodes to learn how long a node takes before batching;
            # tasks: a fresh interpreter per task costs more than any probe could save
            cap = 1 if self._probing() else MAX_BATCH
        else:
            cap = max(1, min(MAX_BATCH, int(TARGET_CALL_SECONDS[self.opts.task_mode] / self.est)))
        if self.opts.task_mode == "tasks":
            # a task pays for a fresh interpreter: one batch per slot, and each batch takes
            # everything that becomes computable inside it
            width = max(1, min(cap, math.ceil(self.planner.n_ready / self.parallel)))
            limit = MAX_BATCH
        else:
            spread = 4 * self.parallel
            width = max(1, min(cap, math.ceil(self.planner.n_ready / spread)))
            limit = max(2, 2 * width)
            if self.planner.n_ready >= spread:
                # plenty of other work for the other slots: let a batch take all the consumers
                # of what it computes (a partition's three histograms of one read), so the
                # partition stays on its worker; with little ready work, fan-outs are spread
                limit = max(limit, ABSORB)
        return width, limit if size is None else min(limit, size)

    def _probing(self) -> bool:
        return self.est is None and self.opts.batch_size is None and self.opts.task_mode == "function-calls"

    def _max_inflight(self) -> float:
        if self.opts.max_pending is not None:
            return self.opts.max_pending
        return 2 * self.parallel if self._probing() else math.inf

    def _submit_ready(self) -> None:
        width, limit = self._sizes()  # from what is ready now: equal batches, spread over the slots
        while len(self.inflight) < self._max_inflight():
            batch = self.planner.take(width, limit)
            if batch is None:
                return
            self._submit(batch)

    def _submit(self, batch: Batch, *, with_graph: bool = False) -> None:
        inputs = {k: self.values[k] for k in batch.inputs if k in self.values}
        self.stats.bytes_to_workers += sum(len(v) for v in inputs.values())
        from_files: dict[int, list[Key]] = {}  # values other batches left on workers
        for k in batch.inputs:
            if k not in inputs:
                from_files.setdefault(self.where[k], []).append(k)
        kept = {f"kept-{bid}": ks for bid, ks in from_files.items()} or None
        # a batch whose values only other batches read leaves them on its worker (not while
        # probing node times: a kept call reports only its wall time, start-up included)
        keep = (
            not self._probing()
            and self.opts.worker_transfers
            and bool(batch.outputs)
            and not any(k in self.planner.requested for k in batch.outputs)
        )
        call: PythonTask
        if self.opts.task_mode == "tasks":
            call = PythonTask(
                dask_exec.kubevine_dask_task, self.graph_id, batch.keys, inputs, batch.outputs, kept
            )
            for name, value in self.opts.resources.items():
                getattr(call, f"set_{name}")(value)
        else:
            blob = self.blob if with_graph else None
            self.stats.graph_sends += with_graph
            call = FunctionCall(
                self.library,
                "kubevine_dask_batch",
                self.graph_id,
                blob,
                batch.keys,
                inputs,
                batch.outputs,
                kept,
                keep,
            )
        assert self.graph_file is not None
        call.add_input(self.graph_file, dask_exec.GRAPH_FILE)
        for f, remote in self.opts.extra_files.items():
            call.add_input(f, remote)
        for bid in from_files:
            call.add_input(self.kept_files[bid], f"kept-{bid}")
        if keep:
            call.enable_temp_output()
            assert call.output_file is not None
            self.kept_files[batch.id] = call.output_file
            self.kept_all.append(call.output_file)
        call.set_retries(self.opts.retries)
        call.set_tag(self.tag)
        call.future.add_done_callback(functools.partial(self._arrived, batch))
        self.inflight[batch.id] = call
        self.stats.calls += 1
        self.m.submit(call)

    def _arrived(self, batch: Batch, fut: Any) -> None:  # on the client's I/O thread: hand over only
        self.results.put((batch, fut.result()))

    def _finished(self, batch: Batch, task: FunctionCall) -> int:
        """A call ended: file its values, or raise its node's exception. Returns nodes done."""
        del self.inflight[batch.id]
        if task.outcome != Outcome.SUCCESS and task.outcome != Outcome.EXCEPTION:
            keys = ", ".join(repr(k) for k in batch.keys[:3]) + (" ..." if len(batch.keys) > 3 else "")
            raise RemoteError(f"dask keys {keys} could not run: {task.outcome}: {task.error}")
        kept = batch.id in self.kept_files
        try:
            # raises the node's own exception, with its remote traceback; a kept value stays put
            reply = (OK, {}, task.wall_time) if kept and task.successful() else task.value
        except dask_exec.NeedGraph:  # what a call whose value stays put says instead
            reply = (NEED_GRAPH,)
        if reply[0] == NEED_GRAPH:
            self._submit(batch, with_graph=True)
            return 0
        assert reply[0] == OK, reply[0]
        _, out, seconds = reply
        if kept:
            self.stats.kept_calls += 1
            for k in batch.outputs:
                self.where[k] = batch.id
        per_node = seconds / max(1, len(batch.keys))
        self.est = per_node if self.est is None else 0.7 * self.est + 0.3 * per_node
        self.stats.node_seconds += seconds
        self.stats.nodes += len(batch.keys)
        self.stats.bytes_to_client += sum(len(v) for v in out.values())
        self.values.update(out)
        for k in self.planner.done(batch):
            if self.opts.prune:
                self.values.pop(k, None)
        return len(batch.keys)

    def _undeclare(self) -> None:
        """The graph is done (or failed): workers drop the values it left on them, and the
        graph file. Not sooner: a kept value lost with its worker is made again by re-running
        its call, which needs the kept values that call read in turn."""
        files = [*self.kept_all, *([self.graph_file] if self.graph_file is not None else [])]
        for f in files:
            if f.name is not None or f.kind != FileKind.TEMP:
                try:
                    self.m.undeclare_file(f)
                except Exception:  # a closed manager: its workers forget the workflow anyway
                    log.debug("could not undeclare %s", f, exc_info=True)
        self.kept_all.clear()

    def _cancel(self) -> None:
        """Stop what is left of this graph only; the manager and workers keep serving."""
        if self.inflight:
            try:
                self.m.cancel_all_by_tag(self.tag)
            except Exception:  # a closed or broken manager: nothing left to cancel
                log.debug("could not cancel the rest of dask graph %s", self.graph_id, exc_info=True)
        self.inflight.clear()
