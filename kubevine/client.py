"""The client: ``Manager``, the object user code talks to (TaskVine's name and verbs).

``Manager("host:port")`` connects to a running manager service. ``Manager()`` starts a
local one with two workers (see :mod:`kubevine.local`) and stops it on ``close()``.

A background I/O thread owns the ZeroMQ socket: user threads queue submissions, the I/O
thread sends them in batches and files results as they arrive, so ``submit`` never waits
for the network and results are collected even while user code is busy. ``wait`` hands
tasks back one at a time, TaskVine-style; every task also has a ``future`` for the
``concurrent.futures`` style (see :func:`as_completed`).

Results are acknowledged to the manager only once handed to user code, so a client that
crashes and reattaches under the same ``name`` receives everything it had not yet seen;
``Manager(address, name=..., attach=True)`` in a new process also learns which tasks the
old one had submitted, so ``wait()`` goes on where the dead process stopped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

from kubevine import auth
from kubevine.clientio import Connection, ConnectionRefused, Shared, StoreUnavailable
from kubevine.files_api import FileAPI
from kubevine.ids import ClientId, TaskId
from kubevine.protocol import (
    MAX_MESSAGE,
    Cancel,
    FileBinding,
    FileKind,
    IdBlock,
    IdBlockRequest,
    InstallLibrary,
    Outcome,
    RemoveLibrary,
    StatusReply,
    StatusRequest,
    _Msg,
)
from kubevine.serverless import FunctionCall, Library, auto_library_name
from kubevine.session import BACKOFF_MAX
from kubevine.states import ClientState
from kubevine.stats import ManagerStatus
from kubevine.task import File, Task, Upload, env_name, temp_name
from kubevine.vine_api import VineAPI

if TYPE_CHECKING:
    from kubevine.local import LocalCluster
    from kubevine.taskcache import TasksCache

log = logging.getLogger(__name__)

PAYLOAD_MAX = MAX_MESSAGE - (1 << 20)  # a task's pickled function and arguments: one message

__all__ = ["ConnectionRefused", "Manager", "StoreUnavailable", "as_completed"]


class Manager(FileAPI, VineAPI):
    """A workflow's manager, seen from user code."""

    def __init__(
        self,
        port: int | Sequence[int] | str | None = None,
        name: str | None = None,
        shutdown: bool = False,
        run_info_path: str | os.PathLike[str] | None = None,
        run_info_template: str | None = None,
        staging_path: str | os.PathLike[str] | None = None,
        ssl: bool | tuple[str | None, str | None] | None = None,
        init_fn: Callable[[Manager], Any] | None = None,
        status_display_interval: float | None = None,
        prometheus: bool | int | None = None,
        *,
        address: str | None = None,
        token: str | None = None,
        client: str | None = None,
        workers: int | None = None,
        cores_per_worker: float = 1,
        redis: str | None = None,
        connect_timeout: float = 30.0,
        attach: bool = False,
        encrypt: bool | None = None,
    ) -> None:
        """Connect to a manager service, or start one here (TaskVine's ``Manager``).

        ``Manager(port)`` — an int, ``0`` for any free port, or ``[low, high]`` for the first
        free port in that range — starts a manager listening there with no workers, as
        TaskVine does: workers join with the command line it logs (``m.worker_command``;
        ``kubevine worker HOST PORT`` on this machine finds the token by itself).
        ``Manager()`` starts a manager and ``workers`` (default 2) local workers on a free
        port, so a notebook runs at once. ``Manager("host:port")`` or ``address=`` connects to
        a running manager service (the token from ``token=`` or ``$KUBEVINE_TOKEN``).

        TaskVine's keywords: ``name`` is the workflow's name; ``ssl`` (True, or its
        ``(key, cert)`` files, which kubevine does not need) encrypts the wire, as
        ``encrypt=True``; ``run_info_path`` (and ``run_info_template``) is where a manager
        started here keeps its logs (``m.logging_directory``); ``prometheus`` (True or a
        port) serves its metrics (``m.prometheus_port``); ``init_fn(m)`` runs once
        connected; ``shutdown=True`` releases every worker when the manager is closed.
        ``staging_path`` and ``status_display_interval`` are accepted and not needed.

        ``client`` names this client: reconnecting under the same name collects what the
        previous client had not received; with ``attach=True`` (a new process taking over
        from one that died) the manager also tells which tasks it had submitted and not
        collected (``m.attached``). ``encrypt=True`` (default ``$KUBEVINE_ENCRYPT``) encrypts
        the connection (ZeroMQ CURVE, keys derived from the token); both ends must agree.
        """
        self._cluster: LocalCluster | None = None
        self._closed = True  # until connected: close() and __del__ have nothing to do
        self._shutdown = shutdown
        self._tunables: dict[str, float] = {}
        self._tasks_cache: TasksCache | None = None
        self._cache_hits = 0  # cached tasks get ids -1, -2, ...
        self._prometheus_port: int | None = None
        self.workflow_name = name
        encrypt = _encryption(ssl, encrypt)
        for what, value in (
            ("staging_path", staging_path),
            ("status_display_interval", status_display_interval),
        ):
            if value is not None:
                log.info(
                    "Manager(%s=...): not needed by kubevine (payloads travel in messages; "
                    "progress: m.results(progress=True))",
                    what,
                )
        if isinstance(port, str):
            address, port = address or port, None
        if address is None:
            address, token = self._start_here(
                port,
                workers,
                cores_per_worker,
                redis,
                encrypt,
                name,
                _run_dir(run_info_path, run_info_template),
                prometheus,
                token,
            )
        elif prometheus is not None:
            raise ValueError(
                "prometheus= serves the metrics of a manager started here; a manager "
                "service serves its own (kubevine manager --metrics-port)"
            )
        self._connect(address, token, client, attach, encrypt, connect_timeout)
        if init_fn is not None:
            init_fn(self)

    def _connect(
        self, address: str, token: str | None, client: str | None, attach: bool, encrypt: bool, timeout: float
    ) -> None:
        """Open the session to the manager at ``address`` and wait for its welcome."""
        self.address = address
        tok = token or auth.load_token()
        if tok is None:
            raise auth.TokenError("no token: pass Manager(address, token=...) or set KUBEVINE_TOKEN")
        self.client = ClientId(client or f"client-{uuid.uuid4().hex[:12]}")
        if attach and client is None:
            raise ValueError("attach=True needs the client name the earlier client used")
        self._st = Shared()
        self.attached: list[Task] = self._st.attached  # tasks of an earlier process (attach=True)
        self._conn = Connection(self._st, address, auth.Credentials(tok, encrypt), self.client, attach)
        self._conn.fetcher = self
        self._closed = False
        self._conn.start()
        conn = self._conn
        # a restarted manager that still loads a large workflow says so to each hello: while it
        # does, the timeout counts from its last word (hellos go at most BACKOFF_MAX apart)
        while not conn.welcome.wait(timeout):
            heard = conn.loading_heard
            if heard is None or time.monotonic() - heard > max(timeout, 2 * BACKOFF_MAX):
                self.close()
                raise ConnectionError(f"no manager answered at {address} within {timeout}s")
        if conn.refusal is not None:
            self.close()
            raise ConnectionRefused(f"manager at {address} refused the connection: {conn.refusal}")
        if conn.unwelcome is not None:
            self.close()
            raise conn.unwelcome

    def _start_here(
        self,
        spec: int | Sequence[int] | None,
        workers: int | None,
        cores: float,
        redis: str | None,
        encrypt: bool,
        name: str | None,
        workdir: Path | None,
        prometheus: bool | int | None,
        token: str | None,
    ) -> tuple[str, str]:
        """Start a manager (and, for ``Manager()``, local workers) here; its address and token."""
        from kubevine.local import LocalCluster, free_port

        n = workers if workers is not None else (2 if spec is None else 0)
        self._prometheus_port = _prometheus_port(prometheus)
        if self._prometheus_port is not None:
            from kubevine.prometheus import require

            require()
        self._cluster = cluster = LocalCluster(
            workers=n,
            cores=cores,
            port=free_port(spec) if spec is not None else 0,
            host="0.0.0.0" if spec is not None else "127.0.0.1",  # TaskVine's: reachable by workers
            redis=redis,
            encrypt=encrypt,
            name=name,
            workdir=workdir,
            metrics_port=self._prometheus_port,
            publish_token=spec is not None,
        )
        cluster.start()
        if spec is not None:
            log.info(
                "manager listening on port %d; workers join with: %s",
                self.port_of(cluster.address),
                " ".join(cluster.worker_command()),
            )
        return cluster.address, token or cluster.token

    # ------------------------------------------------------------------ where it is

    @property
    def port(self) -> int:
        """The port the manager listens on (TaskVine's ``m.port``: what workers connect to)."""
        return self.port_of(self.address)

    @staticmethod
    def port_of(address: str) -> int:
        return int(address.rsplit(":", 1)[1])

    @property
    def name(self) -> str:
        """The workflow's name (TaskVine's project name): the manager's own, once it said it."""
        return self._conn.workflow or self.workflow_name or ""

    def set_name(self, name: str) -> None:
        """TaskVine's project name. kubevine has no catalog: the name labels this client's
        view of the workflow (``m.name``); the manager's name is set when it starts."""
        self.workflow_name = name

    @property
    def worker_command(self) -> list[str]:
        """The command line that joins a worker to this manager from this machine."""
        if self._cluster is not None:
            return self._cluster.worker_command()
        host, _, port = self.address.rpartition(":")
        return ["kubevine", "worker", host, port]

    @property
    def logging_directory(self) -> Path | None:
        """Where a manager started here keeps its logs (transactions.log, manager.log); None
        for a manager service, whose logs are its own."""
        return self._cluster.workdir / "manager" if self._cluster is not None else None

    @property
    def prometheus_port(self) -> int | None:
        """The port of ``/metrics`` when started with ``prometheus=``, else None."""
        return self._prometheus_port

    # ------------------------------------------------------------------ submit

    def submit(self, task: Task) -> TaskId:
        """Queue a task; returns its id at once (TaskVine's ``submit``). A local input that
        does not exist does not raise: the task comes back from ``wait`` with result
        "input missing", as in TaskVine."""
        self._check_open()
        if task.id is not None and not task.state.final:
            raise ValueError(f"task {task.id} was already submitted")
        if task._attached:
            raise ValueError(
                f"task {task.id} was attached from an earlier client process and lacks what it "
                "ran with (function and arguments, files, resources): build it again to resubmit"
            )
        task._manager, task._value = self, None
        task.submit_finalize()
        try:
            inputs, outputs, files = self._bindings(task)
        except FileNotFoundError as e:
            return self._ended_here(task, Outcome.INPUT_MISSING, str(e))
        if self._tasks_cache is not None and self._cached(task, inputs, outputs):
            assert task.id is not None
            return task.id
        payload = task.payload()
        if payload is not None and len(payload) > PAYLOAD_MAX:
            raise ValueError(
                f"{task!r}: its function and arguments pickle to {len(payload) / 2**20:.0f} MiB, more than "
                f"one message carries ({PAYLOAD_MAX >> 20} MiB): pass large data as a file "
                "(m.declare_buffer / m.declare_file, t.add_input) and read it in the task"
            )
        st = self._st
        with st.lock:
            self._take_id(task)
            spec = task.spec(inputs, outputs)
            for up in files:
                if up.name not in st.out.sent_files:
                    st.out.sent_files.add(up.name)
                    st.out.files.append(up)
            assert task.id is not None
            st.tasks[task.id] = task
            first = not st.out.pending
            st.out.pending.append((spec, payload))
            st.outstanding[task.id] = (spec, payload)
        if first:
            self._conn.wake()
        return task.id

    def _bindings(self, task: Task) -> tuple[list[FileBinding], list[FileBinding], list[Upload]]:
        """The task's files as the wire names them, and the client files to upload with it."""
        inputs: list[FileBinding] = []
        files: list[Upload] = []
        for f, remote in task.inputs:
            b = f.binding(remote)  # raises FileNotFoundError for a missing input
            strict, symlink = task._mounts.get((id(f), remote), (False, False))
            if strict or symlink:
                b.strict, b.symlink = strict, symlink
            inputs.append(b)
            self._uploads(f, files)
        for i, env in enumerate(task.environments):
            inputs.append(env.binding(env_name(i)))
            self._uploads(env, files)
        outputs = []
        for f, remote in task.outputs:
            here = f.kind in (FileKind.LOCAL, FileKind.BUFFER)  # an output buffer comes back like a file
            b = FileBinding(
                remote_name=remote,
                kind=FileKind.LOCAL if here else f.kind,
                cache=f.cache,
                to_client=here,
                watch=remote in task._watched,
            )
            if f.kind == FileKind.TEMP:  # named after the task that writes it
                f.name = b.cache_name = temp_name(_definition(task, inputs) + (f.nonce or ""), remote)
            outputs.append(b)
        return inputs, outputs, files

    def enable_tasks_cache(
        self, cache_dir: str | Path = "vine-cache-outputs", log_file: str | Path = "vine-cache.txlog"
    ) -> None:
        """TaskVine's tasks cache: a task that succeeded before with the same definition and
        inputs is not run again; its kept result comes back first from ``wait``, with
        ``t.hostname == "CACHED"`` (see :mod:`kubevine.taskcache`; a hit's id is negative)."""
        from kubevine.taskcache import TasksCache

        cache = self._tasks_cache = TasksCache(cache_dir, log_file)

        def keep(t: Task) -> None:
            key = getattr(t, "_cache_key", None)
            if key is not None:
                cache.store(key, t)

        self._st.on_done = keep

    def _cached(self, task: Task, inputs: list[FileBinding], outputs: list[FileBinding]) -> bool:
        """A hit is handed back at once (True); a miss is marked to be kept when it succeeds."""
        from kubevine.taskcache import TasksCache

        assert self._tasks_cache is not None
        saved, task.id = task.id, TaskId(0)
        try:
            key = TasksCache.key(task.spec(inputs, outputs), task.payload())
        finally:
            task.id = saved
        task._cache_key = key  # type: ignore[attr-defined]
        stored = self._tasks_cache.lookup(key) if key is not None else None
        if stored is None:
            return False
        self._cache_hits -= 1
        task.id, task.state = TaskId(self._cache_hits), ClientState.DONE
        TasksCache.restore(task, stored)
        with self._st.cv:
            if task._future is None:
                self._st.done.appendleft(task)  # hits come back first
            self._st.cv.notify_all()
        if task._future is not None:
            task._future.set_result(task)
        return True

    def _uploads(self, f: File, files: list[Upload]) -> None:
        """The client's files ``f`` needs (itself, or what it is made from), each sent once."""
        for u in f.uploads():
            name = u.cache_name()
            if name not in self._st.out.sent_files and all(up.name != name for up in files):
                files.append(u.upload())

    def _take_id(self, task: Task) -> None:
        """Give ``task`` the next id of this client's block (called with the lock held)."""
        st = self._st
        if st.ids_left == 0:
            st.lock.release()
            try:
                self._refill_ids()
            finally:
                st.lock.acquire()
        task.id = TaskId(st.next_id)
        st.next_id += 1
        st.ids_left -= 1
        task.state = ClientState.SUBMITTED
        if task._future is not None and task._future.done():
            task._future = None  # a resubmitted task gets a fresh future

    def _ended_here(self, task: Task, outcome: Outcome, why: str) -> TaskId:
        """A task that cannot be sent comes back from ``wait`` as if the manager ended it."""
        st = self._st
        with st.lock:
            self._take_id(task)
        assert task.id is not None
        task.state, task.outcome, task.error, task.attempts = ClientState.FAILED, outcome, why, 0
        with st.cv:
            if task._future is None:
                st.done.append(task)
            st.cv.notify_all()
        if task._future is not None:
            task._future.set_result(task)
        return task.id

    def _refill_ids(self) -> None:
        fut: concurrent.futures.Future[IdBlock] = concurrent.futures.Future()
        self._request(IdBlockRequest(), fut)
        block = fut.result(timeout=30)
        with self._st.lock:
            self._st.next_id, self._st.ids_left = block.first_task_id, block.count

    # ------------------------------------------------------------------ libraries

    def create_library_from_functions(
        self,
        name: str,
        *functions: Callable[..., Any],
        poncho_env: str | None = None,
        init_command: str | None = None,
        add_env: bool = True,
        hoisting_modules: Sequence[str | types.ModuleType] | None = None,
        exec_mode: str = "fork",
        library_context_info: Sequence[Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> Library:
        """A library of these functions (TaskVine's name). Install it with ``install_library``.

        ``hoisting_modules`` are imported once when the library starts; ``library_context_info``
        is ``[setup, args, kwargs]``: ``setup(*args, **kwargs)`` runs once per library process
        and its result is what ``kubevine.library_context()`` returns inside the functions (a
        dict's entries also by ``kubevine.utils.load_variable_from_library(name)``).
        ``exec_mode="direct"`` runs calls in the library process (fastest; calls share module
        state); ``"fork"`` forks a child per call (isolated). ``add_env`` is accepted for
        TaskVine compatibility: kubevine never packs an environment; workers use their own
        (``poncho_env``, a packed environment, is run with ``lib.add_environment``).
        """
        if not functions:
            raise ValueError("a library needs at least one function")
        if exec_mode not in ("fork", "direct"):
            raise ValueError(f"exec_mode is 'fork' or 'direct', not {exec_mode!r}")
        if init_command is not None:
            log.info("create_library_from_functions(init_command=...): not run by kubevine")
        context = None
        if library_context_info is not None:
            fn, args, kwargs = library_context_info
            context = (fn, list(args or ()), dict(kwargs or {}))
        lib = Library(
            name,
            functions,
            hoisting_modules=hoisting_modules or (),
            env=env,
            exec_mode=exec_mode,
            library_context_info=context,
        )
        if poncho_env is not None:
            lib.add_environment(self.declare_poncho(poncho_env))
        return lib

    def install_library(self, lib: Library) -> None:
        """Make a library available; the manager starts it on workers as calls need it."""
        self._check_open()
        files: list[Upload] = []
        for f in [*(f for f, _ in lib.inputs), *lib.environments]:
            self._uploads(f, files)
        with self._st.lock:  # sent before any call submitted after this line
            for up in files:
                if up.name not in self._st.out.sent_files:
                    self._st.out.sent_files.add(up.name)
                    self._st.out.files.append(up)
            self._st.out.setup.append((InstallLibrary(spec=lib.spec(), frame=0), [lib.payload()]))
            self._st.libraries[lib.name] = lib
        self._conn.wake()

    def remove_library(self, name: str) -> None:
        self._send_control(RemoveLibrary(name=name))
        with self._st.lock:
            self._st.libraries.pop(name, None)

    def map(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        library: str | Library | None = None,
        retries: int = 0,
        progress: bool = False,
    ) -> list[Any]:
        """``[fn(x) for x in iterable]``, computed on the workers (TaskVine's ``map``).

        Without ``library``, a library holding just ``fn`` (direct mode) is made and
        installed on first use; ``chunksize`` elements go to each call. Returns the values in
        order; raises the first call's exception if any call raised. ``progress=True`` shows a
        bar (terminal or Jupyter).
        """
        from kubevine import functional

        if library is None and chunksize > 1:
            if isinstance(fn, str):
                raise TypeError("map by function name needs library=")
            return functional.map_chunks(self, fn, iterable, chunksize, retries, progress)
        if library is None:
            if isinstance(fn, str):
                raise TypeError("map by function name needs library=")
            lib_name = auto_library_name(fn)
            if lib_name not in self._st.libraries:
                self.install_library(Library(lib_name, [fn], exec_mode="direct"))
            library = lib_name
        lib_name = library.name if isinstance(library, Library) else library
        name = fn if isinstance(fn, str) else fn.__name__
        calls = [FunctionCall(lib_name, name, x) for x in iterable]
        for c in calls:
            c.set_retries(retries)
        return functional.run_calls(self, calls, progress, name)

    def pair(
        self,
        fn: Callable[[tuple[Any, Any]], Any],
        seq1: Iterable[Any],
        seq2: Iterable[Any],
        chunksize: int = 1,
    ) -> list[Any]:
        """``fn`` of every pair of ``seq1`` x ``seq2`` (it receives one tuple), in product
        order (TaskVine's ``pair``)."""
        from kubevine import functional

        return functional.pair(self, fn, seq1, seq2, chunksize)

    def tree_reduce(self, fn: Callable[[list[Any]], Any], seq: Iterable[Any], chunksize: int = 2) -> Any:
        """Reduce ``seq`` to one value with ``fn``, which receives a list of up to
        ``chunksize`` values (TaskVine's ``tree_reduce``)."""
        from kubevine import functional

        return functional.tree_reduce(self, fn, seq, chunksize)

    def get(self, dsk: Any, keys: Any, **options: Any) -> Any:
        """Compute ``keys`` of the dask graph ``dsk`` on the workers (DaskVine's ``get``).

        Use it as a dask scheduler: ``dask.compute(x, scheduler=m.get)``,
        ``x.compute(scheduler=m.get)`` or ``dask.config.set(scheduler=m.get)``. Options
        (``task_mode``, ``worker_transfers``, ``retries``, ``progress``, ...) are described in
        docs/dask.md; the implementation is :mod:`kubevine.dask`.
        """
        from kubevine.dask import get

        return get(self, dsk, keys, **options)

    # ------------------------------------------------------------------ results

    def wait(self, timeout: float | None = None) -> Task | None:
        """The next finished task, or None if none finishes within ``timeout`` seconds.

        ``None`` or a negative timeout (TaskVine's ``"wait_forever"``) waits for ever; returns
        None at once when nothing is outstanding (see :meth:`empty`).
        """
        return self._wait(timeout, None)

    def wait_for_tag(self, tag: str | None, timeout: float | None = None) -> Task | None:
        """Like :meth:`wait`, for a task with this tag only (any task when ``tag`` is None)."""
        return self._wait(timeout, None if tag is None else (lambda t: t.tag == tag))

    def wait_for_task_id(self, task_id: int, timeout: float | None = None) -> Task | None:
        """Like :meth:`wait`, for this task only."""
        return self._wait(timeout, lambda t: t.id == task_id)

    def _wait(self, timeout: float | str | None, want: Callable[[Task], bool] | None) -> Task | None:
        forever = timeout is None or timeout == "wait_forever" or float(timeout) < 0
        deadline = 0.0 if forever else time.monotonic() + float(timeout or 0)
        st = self._st
        with st.cv:
            if st.refusals:  # refused work is news that cannot wait behind results
                raise st.refusals.popleft()
            while (t := _take(st.done, want)) is None:
                self._raise_if_broken()
                if st.refusals:
                    raise st.refusals.popleft()
                if not st.tasks:  # nothing outstanding can still become what is asked for
                    return None
                remaining = None if forever else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                st.cv.wait(remaining if remaining is not None else 1.0)
            assert t.id is not None
            st.out.acks.append(t.id)
        return t

    def empty(self) -> bool:
        """True when every submitted task has been returned by ``wait``."""
        with self._st.lock:
            return not self._st.tasks and not self._st.done

    def __iter__(self) -> Iterator[Task]:
        """Finished tasks as they come, until none is outstanding."""
        while (t := self.wait()) is not None:
            yield t

    def results(
        self, *, progress: bool = False, timeout: float | None = None, desc: str = "tasks"
    ) -> Iterator[Task]:
        """Finished tasks as they come, until none is outstanding (or none within ``timeout``).

        ``progress=True`` shows a bar (a terminal or Jupyter only; see :mod:`kubevine.progress`).
        """
        from kubevine.progress import track

        with self._st.lock:
            total = len(self._st.tasks) + len(self._st.done)
        return track(self.wait, total, progress=progress, timeout=timeout, desc=desc, failed=_unsuccessful)

    def cancel_by_task_id(self, task_id: int) -> bool:
        with self._st.lock:
            known = TaskId(task_id) in self._st.tasks
        if known:
            self._send_control(Cancel(task_ids=[TaskId(task_id)]))
        return known

    @overload
    def status(self, request: None = None, timeout: float = 10.0) -> ManagerStatus: ...

    @overload
    def status(self, request: str, timeout: float = 10.0) -> list[dict[str, Any]]: ...

    def status(
        self, request: str | None = None, timeout: float = 10.0
    ) -> ManagerStatus | list[dict[str, Any]]:
        """What the manager says about the workflow now (kubevine's whole report). With
        TaskVine's ``request`` ("manager", "tasks", "workers", "libraries"), that part as a
        list of dicts, as TaskVine returns it."""
        if isinstance(request, int | float) and not isinstance(request, bool):
            request, timeout = None, float(request)  # status(5.0): a timeout, as before
        fut: concurrent.futures.Future[StatusReply] = concurrent.futures.Future()
        self._request(StatusRequest(), fut)
        st = ManagerStatus.model_validate_json(fut.result(timeout=timeout).status)
        if request is None:
            return st
        from kubevine.vine_api import status_part

        return status_part(st, request)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        if self._shutdown:
            self._release_workers()
        self._closed = True
        self._conn.stop()
        if self._cluster is not None:
            self._cluster.stop()

    def _release_workers(self) -> None:
        """shutdown=True: every connected worker is drained and leaves."""
        from kubevine.admin import Admin, AdminError

        admin = Admin(self.address, self._conn.credentials.token, encrypt=self._conn.credentials.encrypt)
        try:
            admin.drain(w.id for w in admin.status().workers)
        except AdminError as e:
            log.warning("could not release the workers: %s", e)

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Manager is closed")
        self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._conn.error is not None:
            raise ConnectionError(f"connection to the manager failed: {self._conn.error}")

    def _send_control(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        with self._st.lock:
            self._st.out.add_control(msg, frames)
        self._conn.wake()

    def _request(self, msg: _Msg, fut: concurrent.futures.Future[Any]) -> None:
        with self._st.lock:
            self._st.replies.append((msg, fut))
            self._st.out.add_control(msg)
        self._conn.wake()


def _unsuccessful(t: Task) -> bool:
    return not t.successful()


def _definition(task: Task, inputs: list[FileBinding]) -> str:
    """What a task is, for naming its temp outputs: its spec without id or outputs."""
    saved, task.id = task.id, TaskId(0)
    try:
        return task.spec(inputs, []).model_dump_json(exclude={"id"}) + repr(task.payload())
    finally:
        task.id = saved


def as_completed(
    items: Iterable[Task | concurrent.futures.Future[Task]], timeout: float | None = None
) -> Iterator[Task]:
    """Yield tasks as they finish (each submitted with ``future`` taken before submit)."""
    futs = [i.future if isinstance(i, Task) else i for i in items]
    for f in concurrent.futures.as_completed(futs, timeout=timeout):
        yield f.result()


def _encryption(ssl: bool | tuple[str | None, str | None] | None, encrypt: bool | None) -> bool:
    """TaskVine's ``ssl`` (True, or its key and certificate files, which CURVE does not need)
    means encrypt; otherwise ``encrypt``, else ``$KUBEVINE_ENCRYPT``."""
    if ssl is not None and ssl is not False and not (isinstance(ssl, tuple) and not any(ssl)):
        if isinstance(ssl, tuple):
            log.info("ssl=(key, cert): kubevine encrypts with ZeroMQ CURVE and does not need them")
        return True
    return auth.encrypt_from_env() if encrypt is None else encrypt


def _prometheus_port(prometheus: bool | int | None) -> int | None:
    """TaskVine's ``prometheus=``: True is port 9090, an int that port, None/False none."""
    if prometheus is None or prometheus is False:
        return None
    if prometheus is True:
        return 9090
    if isinstance(prometheus, int) and 1 <= prometheus <= 65535:
        return prometheus
    raise ValueError(f"prometheus= takes True or a port number (1-65535), not {prometheus!r}")


def _run_dir(run_info_path: str | os.PathLike[str] | None, template: str | None) -> Path | None:
    """Where a manager started here keeps its files: ``run_info_path/<template>`` (the template
    defaults to the start time, as TaskVine's), with ``most-recent`` pointing at it; None for
    a temporary folder removed at close."""
    if run_info_path is None:
        return None
    root = Path(run_info_path).absolute()
    stamp = template or time.strftime("%Y-%m-%dT%H%M%S")
    run = root / stamp
    n = 1
    while run.exists():
        run, n = root / f"{stamp}-{n}", n + 1
    run.mkdir(parents=True)
    latest = root / "most-recent"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run.name)
    return run


def _take(done: deque[Task], want: Callable[[Task], bool] | None) -> Task | None:
    """The first finished task ``want`` accepts (any when None), taken out of ``done``."""
    if want is None:
        return done.popleft() if done else None
    for i, t in enumerate(done):
        if want(t):
            del done[i]
            return t
    return None
