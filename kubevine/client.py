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
import tarfile
import threading
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import zmq

from kubevine import auth, filetree
from kubevine.ids import CacheName, ClientId, TaskId
from kubevine.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientResult,
    ErrorMsg,
    FetchedFile,
    FetchFile,
    FileBinding,
    FileKind,
    FileMeta,
    Goodbye,
    Heartbeat,
    Hello,
    IdBlock,
    IdBlockRequest,
    InstallLibrary,
    Outcome,
    ProtocolError,
    PutFiles,
    Refused,
    RemoveLibrary,
    Results,
    ResultsAck,
    StatusReply,
    StatusRequest,
    Submit,
    TaskKind,
    TaskSpec,
    UndeclareFiles,
    Welcome,
    _Msg,
    decode,
    encode,
    frame,
    replace,
    send,
    value_output,
)
from kubevine.serverless import FunctionCall, Library, PythonTask, auto_library_name
from kubevine.stats import ManagerStatus
from kubevine.task import (
    File,
    Task,
    declare_buffer,
    declare_local,
    declare_minitask,
    declare_temp,
    declare_untar,
    declare_url,
    temp_name,
)

log = logging.getLogger(__name__)

FINAL_STATES = ("done", "failed", "cancelled")


class ConnectionRefused(ConnectionError):
    """The manager refused this client (wrong token, protocol mismatch)."""


class StoreUnavailable(ConnectionError):
    """The manager did not accept these tasks: its state store (Redis) has been unreachable
    for longer than it may run without one. Tasks accepted earlier are safe and go on;
    these may be submitted again (``m.submit(t)``) once the store is back."""

    def __init__(self, message: str, tasks: list[Task]) -> None:
        super().__init__(message)
        self.tasks = tasks


class Manager:
    """A workflow's manager, seen from user code."""

    def __init__(
        self,
        address: str | int | None = None,
        *,
        token: str | None = None,
        name: str | None = None,
        workers: int | None = None,
        cores_per_worker: float = 1,
        redis: str | None = None,
        connect_timeout: float = 30.0,
        attach: bool = False,
    ) -> None:
        """Connect to ``address`` ("host:port"), or start a local manager.

        ``Manager()`` starts a manager and ``workers`` (default 2) local workers;
        ``Manager(9123)`` starts a manager on that port with no workers of its own
        (connect some with ``kubevine worker HOST:9123``), as TaskVine's ``Manager(port)``.
        ``name`` identifies this client: reconnecting with the same name collects the
        results the previous client had not received. With ``attach=True`` (a new process
        taking over from one that died) the manager also tells which tasks that client had
        submitted and not collected: they are ``wait()``-ed for like this process's own
        (``m.attached`` lists them; command outputs and return values come back, output
        files declared by the dead process are not written).
        """
        self._cluster = None
        if address is None or isinstance(address, int):
            from kubevine.local import LocalCluster

            n = workers if workers is not None else (2 if address is None else 0)
            self._cluster = LocalCluster(workers=n, cores=cores_per_worker, port=address or 0, redis=redis)
            self._cluster.start()
            address = self._cluster.address
            token = token or self._cluster.token
        self.address = address
        tok = token or auth.load_token()
        if tok is None:
            raise auth.TokenError("no token: pass Manager(address, token=...) or set KUBEVINE_TOKEN")
        self._token = tok
        self.name = ClientId(name or f"client-{uuid.uuid4().hex[:12]}")
        if attach and name is None:
            raise ValueError("attach=True needs the name the earlier client used")
        self._attach = attach
        self.attached: list[Task] = []  # tasks of an earlier process under this name (attach=True)
        self._refusals: deque[StoreUnavailable] = deque()
        self._unwelcome: StoreUnavailable | None = None  # the manager cannot welcome us now
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._tasks: dict[TaskId, Task] = {}
        self._done: deque[Task] = deque()
        self._pending: list[tuple[TaskSpec, bytes | None]] = []
        self._files_out: list[tuple[CacheName, bytes]] = []
        self._sent_files: set[CacheName] = set()
        self._acks: list[TaskId] = []
        # control messages, each with how many queued submissions precede it (sent in that order)
        self._control: list[tuple[_Msg, list[bytes], int]] = []
        self._libraries: dict[str, Library] = {}
        self._outstanding: dict[TaskId, tuple[TaskSpec, bytes | None]] = {}  # to resend after a restart
        self._setup: list[tuple[_Msg, list[bytes]]] = []  # sent before submissions
        # requests awaiting their reply, kept to be asked again on a new connection
        self._replies: deque[tuple[_Msg, concurrent.futures.Future[Any]]] = deque()
        self._fetches: dict[int, concurrent.futures.Future[tuple[FetchedFile, bytes | None]]] = {}
        self._fetch_msgs: dict[int, FetchFile] = {}
        self._fetch_seq = 0
        self._next_id = 0
        self._ids_left = 0
        self._closed = False
        self._error: BaseException | None = None
        self._welcome = threading.Event()
        self._refused: str | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._wake_addr = f"inproc://client-wake-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._io = threading.Thread(target=self._io_loop, name="kubevine-client-io", daemon=True)
        self._io.start()
        if not self._welcome.wait(connect_timeout):
            self.close()
            raise ConnectionError(f"no manager answered at {address} within {connect_timeout}s")
        if self._refused is not None:
            reason = self._refused
            self.close()
            raise ConnectionRefused(f"manager at {address} refused the connection: {reason}")
        if self._unwelcome is not None:
            err = self._unwelcome
            self.close()
            raise err

    # ------------------------------------------------------------------ files

    def declare_file(self, path: str | Path, cache: str = "workflow") -> File:
        """A local file (input: sent to workers once; output: written back here)."""
        return declare_local(path, cache)

    def declare_buffer(self, data: bytes | str, cache: str = "workflow") -> File:
        """Bytes in memory, made available to tasks as a file."""
        return declare_buffer(data, cache)

    def declare_url(self, url: str, cache: str = "workflow") -> File:
        """A file at a URL (http, https, file): fetched by a worker, never by the manager,
        once per node; other workers of the workflow get it from their peers."""
        return declare_url(url, cache)

    def declare_temp(self) -> File:
        """An intermediate file: written by one task (``add_output``), read by others
        (``add_input``). It stays on the worker that made it and moves peer to peer; if that
        worker is lost before it is used, the task that made it runs again."""
        return declare_temp()

    def declare_untar(self, archive: File, cache: str = "workflow") -> File:
        """A directory: the tar archive ``archive`` (any declared file; gzip, bzip2 and xz are
        recognised) unpacked by the worker, once per node cache, and kept unpacked there."""
        return declare_untar(archive, cache)

    def declare_minitask(self, task: Task, path: str, cache: str = "workflow") -> File:
        """A file (or directory) made on the worker by running the command ``task`` (with its
        inputs) and taking what it leaves at ``path`` in its sandbox; made once per node cache
        and named after the task's definition. ``task`` is never submitted itself."""
        return declare_minitask(task, path, cache)

    @overload
    def fetch_file(self, file: File, path: None = None, *, timeout: float = 120.0) -> bytes: ...

    @overload
    def fetch_file(self, file: File, path: str | Path, *, timeout: float = 120.0) -> Path: ...

    def fetch_file(
        self, file: File, path: str | Path | None = None, *, timeout: float = 120.0
    ) -> bytes | Path:
        """A declared file's content, from wherever it is (TaskVine's ``fetch_file``).

        A temp, an unpacked archive, a minitask's product or a URL's content comes from a
        worker that holds it, through the manager (nothing runs again). Returns the bytes;
        with ``path``, writes the file — or directory — there instead and returns the path.
        :class:`FileNotFoundError` when no worker holds the file (not made yet, or lost).
        """
        self._check_open()
        dest = Path(path) if path is not None else None
        if file.kind == FileKind.LOCAL:  # on this machine already (an output comes back by itself)
            assert file.path is not None
            if not file.path.exists():
                raise FileNotFoundError(f"{file.path} does not exist (an output arrives when its task ends)")
            if file.path.is_dir():
                if dest is None:
                    raise IsADirectoryError(f"{file.path} is a directory: pass path= to copy it somewhere")
                _write_atomic(dest, filetree.pack(file.path), directory=True)
                return dest
            data: bytes = file.path.read_bytes()
            directory = False
        elif file.kind == FileKind.BUFFER:
            data, directory = file.data or b"", False
        else:
            name = file.cache_name()  # ValueError for a temp whose producer was never submitted
            fut: concurrent.futures.Future[tuple[FetchedFile, bytes | None]] = concurrent.futures.Future()
            with self._lock:
                self._fetch_seq += 1
                request = self._fetch_seq
                self._fetches[request] = fut
                self._fetch_msgs[request] = FetchFile(request=request, cache_name=name)
            self._send_control(self._fetch_msgs[request])
            try:
                reply, content = fut.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                with self._lock:
                    self._fetches.pop(request, None)
                    self._fetch_msgs.pop(request, None)
                raise TimeoutError(f"fetching {file!r} took longer than {timeout}s") from None
            if reply.error is not None or content is None:
                raise FileNotFoundError(f"cannot fetch {file!r}: {reply.error or 'no content'}")
            data, directory = content, reply.directory
        if dest is not None:
            _write_atomic(dest, data, directory)
            return dest
        if directory:
            raise IsADirectoryError(f"{file!r} is a directory: pass path= to write it somewhere")
        return data

    # ------------------------------------------------------------------ submit

    def submit(self, task: Task) -> TaskId:
        """Queue a task; returns its id at once (TaskVine's ``submit``)."""
        self._check_open()
        if task.id is not None and task.state not in (*FINAL_STATES, "refused"):
            raise ValueError(f"task {task.id} was already submitted")
        if task._attached:
            raise ValueError(
                f"task {task.id} was attached from an earlier client process and lacks what it "
                "ran with (function and arguments, files, resources): build it again to resubmit"
            )
        inputs: list[FileBinding] = []
        files: list[tuple[CacheName, bytes]] = []
        for f, remote in task.inputs:
            inputs.append(f.binding(remote))  # raises FileNotFoundError for a missing input
            for u in f.uploads():  # the client's files it needs: sent once
                name = u.cache_name()
                if name not in self._sent_files and all(n != name for n, _ in files):
                    files.append((name, u.content()))
        outputs = []
        for f, remote in task.outputs:
            b = FileBinding(
                remote_name=remote, kind=f.kind, cache=f.cache, to_client=f.kind == FileKind.LOCAL
            )
            if f.kind == FileKind.TEMP:  # named after the task that writes it
                f.name = b.cache_name = temp_name(_definition(task, inputs) + (f.nonce or ""), remote)
            outputs.append(b)
        with self._lock:
            if self._ids_left == 0:
                self._lock.release()
                try:
                    self._refill_ids()
                finally:
                    self._lock.acquire()
            task.id = TaskId(self._next_id)
            self._next_id += 1
            self._ids_left -= 1
            task.state = "submitted"
            task._manager, task._value = self, None
            if task._future is not None and task._future.done():
                task._future = None  # a resubmitted task gets a fresh future
            spec = task.spec(inputs, outputs)
            payload = task.payload()
            for name, data in files:
                if name not in self._sent_files:
                    self._sent_files.add(name)
                    self._files_out.append((name, data))
            self._tasks[task.id] = task
            first = not self._pending
            self._pending.append((spec, payload))
            self._outstanding[task.id] = (spec, payload)
        if first:
            self._wake()
        return task.id

    def _refill_ids(self) -> None:
        fut: concurrent.futures.Future[IdBlock] = concurrent.futures.Future()
        self._request(IdBlockRequest(), fut)
        block = fut.result(timeout=30)
        with self._lock:
            self._next_id, self._ids_left = block.first_task_id, block.count

    # ------------------------------------------------------------------ libraries

    def create_library_from_functions(
        self,
        name: str,
        *functions: Callable[..., Any],
        hoisting_modules: Sequence[str | types.ModuleType] = (),
        env: dict[str, str] | None = None,
        exec_mode: str = "fork",
        library_context_info: tuple[Callable[..., Any], Sequence[Any], dict[str, Any]] | None = None,
        add_env: bool = True,
    ) -> Library:
        """A library of these functions (TaskVine's name). Install it with ``install_library``.

        ``hoisting_modules`` are imported once when the library starts; ``library_context_info``
        is ``(setup, args, kwargs)``: ``setup(*args, **kwargs)`` runs once per library process
        and its result is what ``kubevine.library_context()`` returns inside the functions.
        ``exec_mode="direct"`` runs calls in the library process (fastest; calls share module
        state); ``"fork"`` forks a child per call (isolated). ``add_env`` is accepted for
        TaskVine compatibility: kubevine never packs an environment; workers use their own.
        """
        return Library(
            name,
            functions,
            hoisting_modules=hoisting_modules,
            env=env,
            exec_mode=exec_mode,
            library_context_info=library_context_info,
        )

    def install_library(self, lib: Library) -> None:
        """Make a library available; the manager starts it on workers as calls need it."""
        self._check_open()
        with self._lock:  # sent before any call submitted after this line
            self._setup.append((InstallLibrary(spec=lib.spec(), frame=0), [lib.payload()]))
        self._wake()
        self._libraries[lib.name] = lib

    def remove_library(self, name: str) -> None:
        self._send_control(RemoveLibrary(name=name))
        self._libraries.pop(name, None)

    def map(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any],
        *,
        library: str | Library | None = None,
        retries: int = 0,
        progress: bool = False,
    ) -> list[Any]:
        """``[fn(x) for x in iterable]``, computed as function calls on the workers.

        Without ``library``, a library holding just ``fn`` (direct mode) is made and
        installed on first use. Returns the values in order; raises the first call's
        exception if any call raised. ``progress=True`` shows a bar (terminal or Jupyter).
        """
        if library is None:
            if isinstance(fn, str):
                raise TypeError("map by function name needs library=")
            lib_name = auto_library_name(fn)
            if lib_name not in self._libraries:
                lib = Library(lib_name, [fn], exec_mode="direct")
                self.install_library(lib)
            library = lib_name
        lib_name = library.name if isinstance(library, Library) else library
        name = fn if isinstance(fn, str) else fn.__name__
        calls = []
        for x in iterable:
            c = FunctionCall(lib_name, name, x)
            c.set_retries(retries)
            _ = c.future
            calls.append(c)
        for c in calls:
            self.submit(c)
        from kubevine.progress import wait_futures

        wait_futures([c.future for c in calls], progress=progress, desc=name)
        return [c.output for c in calls]

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

        ``None`` or a negative timeout waits for ever; returns None at once when nothing
        is outstanding (see :meth:`empty`).
        """
        forever = timeout is None or timeout < 0
        deadline = 0.0 if forever else time.monotonic() + float(timeout or 0)
        with self._cv:
            if self._refusals:  # refused work is news that cannot wait behind results
                raise self._refusals.popleft()
            while not self._done:
                self._raise_if_broken()
                if self._refusals:
                    raise self._refusals.popleft()
                if not self._tasks:
                    return None
                remaining = None if forever else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cv.wait(remaining if remaining is not None else 1.0)
            t = self._done.popleft()
            assert t.id is not None
            self._acks.append(t.id)
        return t

    def empty(self) -> bool:
        """True when every submitted task has been returned by ``wait``."""
        with self._lock:
            return not self._tasks and not self._done

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

        with self._lock:
            total = len(self._tasks) + len(self._done)
        return track(self.wait, total, progress=progress, timeout=timeout, desc=desc, failed=_unsuccessful)

    def cancel_by_task_id(self, task_id: int) -> bool:
        with self._lock:
            known = TaskId(task_id) in self._tasks
        if known:
            self._send_control(Cancel(task_ids=[TaskId(task_id)]))
        return known

    def cancel_by_task_tag(self, tag: str) -> None:
        self._send_control(Cancel(tag=tag))

    def undeclare_file(self, file: File) -> None:
        """The workflow no longer needs this file (TaskVine's call): workers delete their
        copies and, for a temp, the manager forgets the task that wrote it, which is not run
        again to remake it. A file an unfinished task still reads or writes goes once that
        task is done. Using the file again later sends or makes it anew."""
        if file.kind == FileKind.TEMP and file.name is None:
            return  # never made: nothing to forget
        try:
            name = file.cache_name()
        except FileNotFoundError:
            return  # a local file gone from disk was never sent under its current name
        with self._lock:
            self._sent_files.discard(name)
            last = self._control[-1] if self._control else None
            if last is not None and isinstance(last[0], UndeclareFiles) and last[2] == len(self._pending):
                last[0].cache_names.append(name)  # many undeclares in a row travel as one
                return
        self._send_control(UndeclareFiles(cache_names=[name]))

    def status(self, timeout: float = 10.0) -> ManagerStatus:
        """What the manager says about the workflow now."""
        fut: concurrent.futures.Future[StatusReply] = concurrent.futures.Future()
        self._request(StatusRequest(), fut)
        return ManagerStatus.model_validate_json(fut.result(timeout=timeout).status)

    def stats(self) -> ManagerStatus:
        return self.status()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._io.join(timeout=5)
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        if self._cluster is not None:
            self._cluster.stop()

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
        if self._error is not None:
            raise ConnectionError(f"connection to the manager failed: {self._error}")

    def _wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _send_control(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        with self._lock:
            self._control.append((msg, frames or [], len(self._pending)))
        self._wake()

    def _request(self, msg: _Msg, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._replies.append((msg, fut))
            self._control.append((msg, [], len(self._pending)))
        self._wake()

    def _io_loop(self) -> None:
        try:
            self._io_run()
        except BaseException as e:  # surface to user threads rather than die silently
            log.exception("client I/O thread failed")
            self._error = e
            with self._cv:
                self._cv.notify_all()

    def _connect(self) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(f"tcp://{self.address}")
        s.send_multipart(encode(self._hello()))
        return s

    def _hello(self) -> Hello:
        return Hello(
            protocol=PROTOCOL_VERSION, token=self._token, role="client", client=self.name, attach=self._attach
        )

    def _io_run(self) -> None:
        sock = self._connect()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        registered = False
        manager_id: str | None = None
        last_sent = last_heard = time.monotonic()
        hb_interval, hb_timeout = 2.0, 30.0
        try:
            while not self._closed:
                events = dict(poller.poll(100))
                now = time.monotonic()
                if self._wake_rx in events:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if sock in events:
                    while True:
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        last_heard = now
                        try:
                            msg, frames = decode(parts)
                        except ProtocolError as e:
                            log.error("bad message from the manager: %s", e)
                            continue
                        if isinstance(msg, Welcome):
                            if manager_id is not None:
                                # a new manager may not have stored everything; and what the
                                # old socket still held when we gave up on it was dropped
                                self._resubmit(new_manager=msg.manager_id != manager_id)
                            manager_id = msg.manager_id
                            registered = True
                            hb_interval, hb_timeout = msg.heartbeat_interval, msg.heartbeat_timeout
                            if msg.first_task_id is not None:
                                with self._lock:
                                    self._next_id, self._ids_left = msg.first_task_id, msg.id_block
                            if msg.tasks:
                                self._adopt(msg.tasks)
                            self._welcome.set()
                        elif isinstance(msg, Refused):
                            self._refused = msg.reason
                            self._welcome.set()
                            return
                        elif isinstance(msg, ErrorMsg) and msg.code == "not_registered":
                            if registered:
                                self._ask_again()
                            registered = False
                            sock.send_multipart(encode(self._hello()))
                        else:
                            self._on_message(msg, frames)
                if registered and self._flush(sock):
                    last_sent = now
                if now - last_sent > hb_interval:
                    sock.send_multipart(encode(Heartbeat()))
                    last_sent = now
                if now - last_heard > hb_timeout + hb_interval:
                    log.warning("manager at %s silent; reconnecting", self.address)
                    poller.unregister(sock)
                    sock.close(0)
                    sock = self._connect()
                    poller.register(sock, zmq.POLLIN)
                    if registered:
                        self._ask_again()
                    registered = False
                    last_heard = now
        finally:
            try:
                if registered:
                    with self._lock:
                        acks, self._acks = self._acks, []
                        control, self._control = self._control, []
                    if acks:
                        sock.send_multipart(encode(ResultsAck(task_ids=acks)))
                    for m, extra, _ in control:  # a cancel or an undeclare made just before close
                        send(sock, encode(m, extra))
                    sock.send_multipart(encode(Goodbye(reason="client closed")))
            finally:
                sock.close(linger=200)

    def _adopt(self, specs: list[TaskSpec]) -> None:
        """attach=True: take on the tasks an earlier process under our name left behind."""
        with self._cv:
            for spec in specs:
                if spec.id in self._tasks:
                    continue
                t = _task_from_spec(spec)
                t._manager = self  # a value kept on a worker is fetched through us
                self._tasks[spec.id] = t
                self.attached.append(t)
            self._cv.notify_all()
        log.info("attached to %d task(s) of client %s", len(specs), self.name)

    def _ask_again(self) -> None:
        """The manager will never answer what we asked on a connection it lost: ask again on
        the next one (ids, status, fetches), in the order first asked."""
        with self._lock:
            asked: list[tuple[_Msg, list[bytes], int]] = [(m, [], 0) for m, _ in self._replies] + [
                (m, [], 0) for m in self._fetch_msgs.values()
            ]
            sent = {id(m) for m, _, _ in asked}
            self._control[:] = asked + [c for c in self._control if id(c[0]) not in sent]

    def _resubmit(self, new_manager: bool) -> None:
        """After a reconnect, send every unfinished task again with the client files it needs
        (and the libraries): the manager keeps what it already had and takes the rest. Needed
        for a new manager (it may not have stored everything) and for the same one (messages
        still queued on the abandoned socket were dropped with it)."""
        with self._lock:
            again = [item for tid, item in self._outstanding.items() if tid in self._tasks]
            queued = {s.id for s, _ in self._pending}
            first = [item for item in again if item[0].id not in queued]
            self._pending[:0] = first
            self._control = [(m, f, before + len(first)) for m, f, before in self._control]
            libs = self._libraries.values()
            self._setup[:0] = [(InstallLibrary(spec=lib.spec(), frame=0), [lib.payload()]) for lib in libs]
            files: dict[CacheName, bytes] = {}
            for spec, _ in again:
                task = self._tasks[spec.id]
                for f, _remote in task.inputs:
                    for u in f.uploads():
                        name = u.cache_name()
                        if name not in files:
                            try:
                                files[name] = u.content()
                            except OSError as e:  # its task fails on the manager, saying so
                                log.error("task %s: input %s cannot be read again: %s", spec.id, name, e)
            queued_files = {n for n, _ in self._files_out}
            self._files_out[:0] = [(n, d) for n, d in files.items() if n not in queued_files]
            self._sent_files = set(files) | {n for n, _ in self._files_out}
        what = "a new manager" if new_manager else "the manager"
        log.warning("reconnected to %s: sent %d unfinished task(s) again", what, len(again))

    def _flush(self, sock: zmq.Socket[bytes]) -> bool:
        with self._lock:
            files, self._files_out = self._files_out, []
            pending, self._pending = self._pending, []
            acks, self._acks = self._acks, []
            control, self._control = self._control, []
            setup, self._setup = self._setup, []
        sent = False
        for m, extra in setup:
            send(sock, encode(m, extra))
            sent = True
        if files:
            metas = [FileMeta(cache_name=n, size=len(d), frame=i) for i, (n, d) in enumerate(files)]
            send(sock, encode(PutFiles(files=metas), [d for _, d in files]))
            sent = True
        if acks:
            sock.send_multipart(encode(ResultsAck(task_ids=acks)))
            sent = True
        done = 0  # submissions and control messages go out in the order they were made
        for m, extra, before in control:
            if before > done:
                _send_submit(sock, pending[done:before])
                done = before
            send(sock, encode(m, extra))
            sent = True
        if done < len(pending):
            _send_submit(sock, pending[done:])
            sent = True
        return sent

    def _on_message(self, msg: object, frames: list[bytes]) -> None:
        if isinstance(msg, Results):
            self._on_results(msg.results, frames)
        elif isinstance(msg, (StatusReply, IdBlock)):
            with self._lock:
                fut = self._replies.popleft()[1] if self._replies else None
            if fut is not None:
                fut.set_result(msg)
        elif isinstance(msg, ErrorMsg) and msg.code == "store_unavailable" and not msg.task_ids:
            if not self._welcome.is_set():  # a new client: say so now rather than time out
                self._unwelcome = StoreUnavailable(msg.message, [])
                self._welcome.set()
            else:  # reconnecting: the welcome follows once the store is back
                log.warning("manager: %s", msg.message)
        elif isinstance(msg, ErrorMsg) and msg.code == "store_unavailable":
            log.error("manager: %s: %s", msg.code, msg.message)
            refused: list[Task] = []
            with self._cv:
                for tid in msg.task_ids:
                    t = self._tasks.pop(tid, None)
                    self._outstanding.pop(tid, None)
                    if t is not None:
                        t.state = "refused"
                        refused.append(t)
                err = StoreUnavailable(msg.message, refused)
                self._refusals.append(err)
                self._cv.notify_all()
            for t in refused:
                if t._future is not None and not t._future.done():
                    t._future.set_exception(err)
        elif isinstance(msg, FetchedFile):
            with self._lock:
                pending = self._fetches.pop(msg.request, None)
                self._fetch_msgs.pop(msg.request, None)
            if pending is not None:
                pending.set_result((msg, frame(frames, msg.frame)))
        elif isinstance(msg, ErrorMsg):
            log.error("manager: %s: %s", msg.code, msg.message)
            if msg.task_ids:
                for tid in msg.task_ids:
                    r = ClientResult(
                        task_id=tid,
                        state="failed",
                        attempts=0,
                        outcome=Outcome.SANDBOX_ERROR,
                        error=f"{msg.code}: {msg.message}",
                    )
                    self._on_results([r], [])

    def _on_results(self, results: list[ClientResult], frames: list[bytes]) -> None:
        done: list[Task] = []
        for r in results:
            with self._lock:
                t = self._tasks.get(r.task_id)
            if t is None or t.state in FINAL_STATES:
                continue  # a repeat after a reconnect, or a task already handed back
            t.state = r.state
            t.result = r.outcome
            t.exit_code = r.exit_code
            t.error = r.error
            t.attempts = r.attempts
            t.wall_time = r.wall_time
            t.worker = r.worker
            t._output = frame(frames, r.output_frame)
            for o in r.outputs:
                data = frame(frames, o.frame)
                if data is None:
                    continue
                for f, remote in t.outputs:
                    if remote == o.remote_name and f.path is not None:
                        try:
                            _write_atomic(f.path, data, o.directory)
                        except (OSError, tarfile.TarError) as e:  # the task's result still arrives
                            log.error("task %s: could not write output %s to %s: %s", t.id, remote, f.path, e)
                            t.error = f"{t.error + '; ' if t.error else ''}output {remote} not written: {e}"
            done.append(t)
        with self._cv:
            for t in done:
                assert t.id is not None
                del self._tasks[t.id]
                self._outstanding.pop(t.id, None)
                if t._future is not None:
                    self._acks.append(t.id)  # futures users consume through the future
                else:
                    self._done.append(t)
            self._cv.notify_all()
        for t in done:
            if t._future is not None and not t._future.done():
                t._future.set_result(t)


def _send_submit(sock: zmq.Socket[bytes], pending: list[tuple[TaskSpec, bytes | None]]) -> None:
    frames: list[bytes] = []
    specs = []
    for spec, payload in pending:
        if payload is not None:
            frames.append(payload)
            spec = replace(spec, payload=len(frames) - 1)
        specs.append(spec)
    send(sock, encode(Submit(tasks=specs), frames))


def _task_from_spec(spec: TaskSpec) -> Task:
    """A task submitted by an earlier client process, rebuilt from what the manager holds."""
    t: Task
    if spec.kind == TaskKind.CALL:
        t = FunctionCall(spec.library or "", spec.function or "")
    elif spec.kind == TaskKind.PYTHON:
        t = PythonTask.__new__(PythonTask)
        Task.__init__(t, None)
        t.func, t.args, t.kwargs = (lambda: None), (), {}
    else:
        t = Task(spec.command)
    t.tag, t.category, t.priority, t.retries = spec.tag, spec.category, spec.priority, spec.retries
    t.env, t.time_max = dict(spec.env), spec.time_max
    kept = value_output(spec.outputs)
    if isinstance(t, PythonTask) and kept is not None:  # its value stayed on a worker
        t._output_file = File(FileKind.TEMP, kept.cache, name=kept.cache_name)
    t.id = spec.id
    t.state = "submitted"
    t._attached = True  # rebuilt without payload, inputs or outputs: not to be run again
    return t


def _unsuccessful(t: Task) -> bool:
    return not t.successful()


def _definition(task: Task, inputs: list[FileBinding]) -> str:
    """What a task is, for naming its temp outputs: its spec without id or outputs."""
    saved, task.id = task.id, TaskId(0)
    try:
        return task.spec(inputs, []).model_dump_json(exclude={"id"}) + repr(task.payload())
    finally:
        task.id = saved


def _write_atomic(path: Path, data: bytes, directory: bool = False) -> None:
    """Put a file (or a directory, from its tar) at ``path``, replacing what is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.kubevine-tmp-{uuid.uuid4().hex[:8]}")
    if directory:
        filetree.unpack(data, tmp)
    else:
        tmp.write_bytes(data)
    filetree.place(tmp, path)


def as_completed(
    items: Iterable[Task | concurrent.futures.Future[Task]], timeout: float | None = None
) -> Iterator[Task]:
    """Yield tasks as they finish (each submitted with ``future`` taken before submit)."""
    futs = [i.future if isinstance(i, Task) else i for i in items]
    for f in concurrent.futures.as_completed(futs, timeout=timeout):
        yield f.result()
