"""The client's side of the wire: what user threads queue, and the thread that sends it.

:class:`~kubevine.client.Manager` is the API user code calls; everything it shares with the
network lives here. User threads put submissions, files and control messages in the
:class:`Outbox` and tasks in the :class:`Shared` table; one background thread
(:class:`Connection`) owns the ZeroMQ socket through a :class:`~kubevine.session.Session`,
sends the outbox in batches and files results as they arrive, so ``submit`` never waits for
the network and results are collected while user code is busy.

Order is part of the contract: submissions and control messages (a cancel by tag, an
undeclare, a status request) leave in the order they were made, also within one flush, so a
cancel never catches a task submitted after it (:meth:`Outbox.messages`). After a reconnect
every unfinished task is sent again with the client files it needs, and every request not
yet answered is asked again: the manager keeps what it already had and takes the rest.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

import zmq

from kubevine import filetree
from kubevine.auth import Credentials
from kubevine.chunks import Puller, Sink
from kubevine.ids import CacheName, ClientId, TaskId
from kubevine.protocol import (
    MAX_PIECE,
    PROTOCOL_VERSION,
    TO_CLIENT,
    ClientResult,
    ClientWork,
    ErrorMsg,
    FetchedFile,
    FetchFile,
    FileKind,
    FileMeta,
    Goodbye,
    Hello,
    IdBlock,
    InstallLibrary,
    Outcome,
    OutputFile,
    PutFiles,
    Results,
    ResultsAck,
    StatusReply,
    Submit,
    TaskSpec,
    UndeclareFiles,
    Welcome,
    _Msg,
    frame,
    replace,
)
from kubevine.session import Session
from kubevine.states import ClientState
from kubevine.task import Upload

if TYPE_CHECKING:
    from kubevine.serverless import Library
    from kubevine.task import Task

log = logging.getLogger(__name__)

Pending = tuple[TaskSpec, bytes | None]  # a submission: its spec and its pickled payload
BATCH_BYTES = 16 << 20  # payload or file bytes in one message at most (the limit is MAX_MESSAGE)
PIECE_BUDGET = 8 << 20  # file bytes taken from the outbox per send (the socket's queue bounds the rest)
SEND_QUEUE = 64  # messages the client's socket queues before a send waits for the network


class ConnectionRefused(ConnectionError):
    """The manager refused this client (wrong token, protocol mismatch)."""


class StoreUnavailable(ConnectionError):
    """The manager did not accept these tasks: its state store (Redis) has been unreachable
    for longer than it may run without one. Tasks accepted earlier are safe and go on;
    these may be submitted again (``m.submit(t)``) once the store is back."""

    def __init__(self, message: str, tasks: list[Task]) -> None:
        super().__init__(message)
        self.tasks = tasks


@dataclass(eq=False)
class Outbox:
    """What is waiting to be sent, in the order it must leave (no I/O here)."""

    pending: list[Pending] = field(default_factory=list)  # submissions
    files: list[Upload] = field(default_factory=list)  # client files to upload, in order
    sent_files: set[CacheName] = field(default_factory=set)  # uploaded (or queued) already
    acks: list[TaskId] = field(default_factory=list)  # results handed to user code
    # control messages, each with how many queued submissions precede it (sent in that order)
    control: list[tuple[_Msg, list[bytes], int]] = field(default_factory=list)
    setup: list[tuple[_Msg, list[bytes]]] = field(default_factory=list)  # libraries: before any call

    def add_control(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        self.control.append((msg, frames or [], len(self.pending)))

    def undeclare(self, name: CacheName) -> None:
        """Many undeclares in a row (no submission between them) travel as one message."""
        self.sent_files.discard(name)
        last = self.control[-1] if self.control else None
        if last is not None and isinstance(last[0], UndeclareFiles) and last[2] == len(self.pending):
            last[0].cache_names.append(name)
        else:
            self.add_control(UndeclareFiles(cache_names=[name]))

    def messages(self, budget: int = PIECE_BUDGET) -> list[tuple[_Msg, list[bytes]]]:
        """What is queued, as messages in the order they must leave, taken out of the box.

        Files go in pieces (at most ``budget`` bytes of them per call); while one is still
        being sent, what was queued after it (submissions that read it) waits for the next
        call, so a large upload never sits in memory whole and never overtakes its order."""
        out: list[tuple[_Msg, list[bytes]]] = list(self.setup)
        self.setup = []
        if self.acks:
            out.append((ResultsAck(task_ids=self.acks), []))
            self.acks = []
        if not self._pieces(out, budget):
            return out  # more of a file to send: what follows it waits
        done = 0
        for msg, extra, before in self.control:
            if before > done:
                out += _submits(self.pending[done:before])
                done = before
            out.append((msg, extra))
        if done < len(self.pending):
            out += _submits(self.pending[done:])
        self.control, self.pending = [], []
        return out

    def _pieces(self, out: list[tuple[_Msg, list[bytes]]], budget: int) -> bool:
        """Put files (small ones whole, a batch to a message; large ones a piece at a time) in
        ``out`` up to ``budget`` bytes; True once every queued file is out."""
        metas: list[FileMeta] = []
        frames: list[bytes] = []
        used = 0
        while self.files and used < budget:
            up = self.files[0]
            data = up.piece(min(MAX_PIECE, up.size - up.sent))
            whole = up.sent == 0 and len(data) == up.size
            metas.append(
                FileMeta(
                    cache_name=up.name,
                    size=len(data),
                    frame=len(frames),
                    offset=up.sent,
                    total=None if whole else up.size,
                )
            )
            frames.append(data)
            up.sent += len(data)
            used += len(data)
            if up.sent >= up.size:
                up.done()
                self.files.pop(0)
            if used >= BATCH_BYTES:  # one message carries at most this much
                out.append((PutFiles(files=metas), frames))
                metas, frames = [], []
        if metas:
            out.append((PutFiles(files=metas), frames))
        return not self.files


def _submits(pending: list[Pending]) -> list[tuple[_Msg, list[bytes]]]:
    """Submissions as Submit messages of at most BATCH_BYTES of payloads each."""
    out: list[tuple[_Msg, list[bytes]]] = []
    frames: list[bytes] = []
    specs: list[TaskSpec] = []
    used = 0
    for spec, payload in pending:
        if payload is not None:
            if specs and used + len(payload) > BATCH_BYTES:
                out.append((Submit(tasks=specs), frames))
                frames, specs, used = [], [], 0
            frames.append(payload)
            used += len(payload)
            spec = replace(spec, payload=len(frames) - 1)
        specs.append(spec)
    if specs:
        out.append((Submit(tasks=specs), frames))
    return out


@dataclass(eq=False)
class Shared:
    """What user threads and the I/O thread share; every field is read and written under
    ``lock`` (``cv`` wakes threads waiting for results)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cv: threading.Condition = field(init=False)
    out: Outbox = field(default_factory=Outbox)
    tasks: dict[TaskId, Task] = field(default_factory=dict)  # submitted, result not handed back
    done: deque[Task] = field(default_factory=deque)  # results waiting for ``wait()``
    outstanding: dict[TaskId, Pending] = field(default_factory=dict)  # to send again after a reconnect
    libraries: dict[str, Library] = field(default_factory=dict)
    # requests awaiting their reply (answered in order), asked again on a new connection
    replies: deque[tuple[_Msg, concurrent.futures.Future[Any]]] = field(default_factory=deque)
    fetches: dict[int, tuple[FetchFile, concurrent.futures.Future[tuple[FetchedFile, bytes | None]]]] = field(
        default_factory=dict
    )
    fetch_seq: int = 0
    next_id: int = 0
    ids_left: int = 0
    refusals: deque[StoreUnavailable] = field(default_factory=deque)
    attached: list[Task] = field(default_factory=list)  # tasks of an earlier process (attach=True)
    on_done: Callable[[Task], None] | None = None  # told of every task as it comes back (tasks cache)

    def __post_init__(self) -> None:
        self.cv = threading.Condition(self.lock)


class Connection:
    """The I/O thread: one session to the manager, driven by the :class:`Shared` state."""

    def __init__(
        self, shared: Shared, address: str, credentials: Credentials, name: ClientId, attach: bool
    ) -> None:
        self.shared = shared
        self.address = address
        self.credentials = credentials
        self.name = name
        self.attach = attach
        self.closed = False
        self.error: BaseException | None = None
        self.welcome = threading.Event()  # set once welcomed, refused or told the store is down
        self.refusal: str | None = None
        self.workflow: str | None = None  # the manager's workflow name, from its welcome
        self.unwelcome: StoreUnavailable | None = None  # the manager cannot welcome us now
        self.loading_heard: float | None = None  # when the manager last said it loads its tasks
        self.fetcher: Any = None  # the Manager, for tasks adopted under attach=True
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._wake_addr = f"inproc://client-wake-{uuid.uuid4().hex}"
        self._wake_rx = self.ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self.ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="kubevine-client-io", daemon=True)
        self._backlog: deque[tuple[_Msg, list[bytes]]] = deque()  # taken from the outbox, not yet sent
        self.spool = tempfile.mkdtemp(prefix="kubevine-client-")  # pieces of files being fetched
        self._pulls: list[Pull] = []  # files fetched in pieces by this thread
        self._spilling: dict[TaskId, _Spill] = {}  # tasks waiting for a result left on a worker

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def stop(self) -> None:
        self.closed = True
        self.wake()
        self._thread.join(timeout=5)
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        shutil.rmtree(self.spool, ignore_errors=True)

    # ------------------------------------------------------------------ SessionOwner

    def hello(self) -> Hello:
        return Hello(
            protocol=PROTOCOL_VERSION,
            token=self.credentials.token,
            role="client",
            client=self.name,
            attach=self.attach,
        )

    def welcomed(self, welcome: Welcome, *, again: bool, new_manager: bool) -> None:
        self._requeue_backlog()
        if again:  # a new manager may not have stored everything; and what the old socket
            self._resubmit(new_manager)  # still held when we gave up on it was dropped
        self.workflow = welcome.workflow
        if welcome.first_task_id is not None:
            with self.shared.lock:
                self.shared.next_id, self.shared.ids_left = welcome.first_task_id, welcome.id_block
        if welcome.tasks:
            self._adopt(welcome.tasks)
        self.welcome.set()

    def refused(self, reason: str) -> None:
        self.refusal = reason
        self.closed = True
        self.welcome.set()

    def _requeue_backlog(self) -> None:
        """A new connection: what was taken for the old one and not sent goes again. Control
        messages keep their place at the front; submissions and files are sent again anyway
        (every unfinished task is, with the files it needs)."""
        keep = [(m, f, 0) for m, f in self._backlog if not isinstance(m, Submit | PutFiles)]
        self._backlog.clear()
        if keep:
            with self.shared.lock:
                self.shared.out.control[:0] = keep

    def reset(self) -> None:
        """The manager will never answer what we asked on a connection it lost: ask again on
        the next one (ids, status, fetches), in the order first asked."""
        sh = self.shared
        with sh.lock:
            asked: list[tuple[_Msg, list[bytes], int]] = [(m, [], 0) for m, _ in sh.replies]
            asked += [(m, [], 0) for m, _ in sh.fetches.values()]
            sent = {id(m) for m, _, _ in asked}
            sh.out.control[:] = asked + [c for c in sh.out.control if id(c[0]) not in sent]

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as e:  # surface to user threads rather than die silently
            log.exception("client I/O thread failed")
            self.error = e
            with self.shared.cv:
                self.shared.cv.notify_all()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        session: Session[ClientWork] = Session(
            self.ctx,
            self.address,
            self,
            TO_CLIENT,
            poller=poller,
            credentials=self.credentials,
            send_queue=SEND_QUEUE,
            name=f"client {self.name}",
        )
        session.connect()
        try:
            while not self.closed:
                events = dict(poller.poll(min(100, int(session.due_in() * 1000) + 1)))
                if self._wake_rx in events:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                for msg, frames in session.read(events):
                    self._on_message(msg, frames)
                if session.registered:
                    self._flush(session)
                    if self._pulls:
                        self._tick_pulls()
                if not self.closed:
                    session.tick()
        finally:
            try:
                if session.registered:  # a cancel or an undeclare made just before close
                    with self.shared.lock:
                        box = self.shared.out
                        last: list[tuple[_Msg, list[bytes]]] = []
                        if box.acks:
                            last.append((ResultsAck(task_ids=box.acks), []))
                        last += [(m, f) for m, f, _ in box.control]
                        box.acks, box.control = [], []
                    for m, f in last:
                        session.send(m, f)
                    session.send(Goodbye(reason="client closed"))
            finally:
                session.close(linger=200)

    def _flush(self, session: Session[ClientWork]) -> None:
        """Send what is queued, in order, until the socket's queue is full (the rest waits in
        the backlog for the next turn: the loop then also polls for room to write)."""
        sent = 0
        while sent < 4 * PIECE_BUDGET:
            if not self._backlog:
                with self.shared.lock:
                    self._backlog.extend(self.shared.out.messages())
                if not self._backlog:
                    break
            while self._backlog:
                msg, frames = self._backlog[0]
                if not session.try_send(msg, frames):
                    session.want_write(True)
                    return
                self._backlog.popleft()
                sent += sum(map(len, frames)) + 1
        session.want_write(bool(self._backlog))

    def _on_message(self, msg: ClientWork, frames: list[bytes]) -> None:
        sh = self.shared
        match msg:
            case Results():
                self._on_results(msg.results, frames)
            case StatusReply() | IdBlock():
                with sh.lock:
                    fut = sh.replies.popleft()[1] if sh.replies else None
                if fut is not None:
                    fut.set_result(msg)
            case FetchedFile():
                with sh.lock:
                    pending = sh.fetches.pop(msg.request, None)
                if pending is not None:
                    pending[1].set_result((msg, frame(frames, msg.frame)))
            case ErrorMsg() if msg.code == "store_unavailable":
                self._store_unavailable(msg)
            case ErrorMsg() if msg.code == "loading":  # a restarted manager: the welcome follows
                if self.loading_heard is None:
                    log.warning("manager: %s", msg.message)
                self.loading_heard = time.monotonic()
            case ErrorMsg():
                log.error("manager: %s: %s", msg.code, msg.message)
                failed = [
                    ClientResult(
                        task_id=tid,
                        state="failed",
                        attempts=0,
                        outcome=Outcome.SANDBOX_ERROR,
                        error=f"{msg.code}: {msg.message}",
                    )
                    for tid in msg.task_ids
                ]
                if failed:
                    self._on_results(failed, [])
            case _:
                assert_never(msg)

    def _store_unavailable(self, msg: ErrorMsg) -> None:
        if not msg.task_ids:
            if not self.welcome.is_set():  # a new client: say so now rather than time out
                self.unwelcome = StoreUnavailable(msg.message, [])
                self.welcome.set()
            else:  # reconnecting: the welcome follows once the store is back
                log.warning("manager: %s", msg.message)
            return
        log.error("manager: %s: %s", msg.code, msg.message)
        refused: list[Task] = []
        sh = self.shared
        with sh.cv:
            for tid in msg.task_ids:
                t = sh.tasks.pop(tid, None)
                sh.outstanding.pop(tid, None)
                if t is not None:
                    t.state = ClientState.REFUSED
                    refused.append(t)
            err = StoreUnavailable(msg.message, refused)
            sh.refusals.append(err)
            sh.cv.notify_all()
        for t in refused:
            if t._future is not None and not t._future.done():
                t._future.set_exception(err)

    def _on_results(self, results: list[ClientResult], frames: list[bytes]) -> None:
        sh = self.shared
        done: list[Task] = []
        for r in results:
            with sh.lock:
                t = sh.tasks.get(r.task_id)
            if t is None or t.state in (ClientState.DONE, ClientState.FAILED, ClientState.CANCELLED):
                continue  # a repeat after a reconnect, or a task already handed back
            if t.id in self._spilling:
                continue  # its result is being fetched already
            t.state = ClientState(r.state)
            t.outcome = r.outcome
            t.exit_code = r.exit_code
            t.error = r.error
            t.attempts = r.attempts
            t.wall_time = r.wall_time
            t.worker = r.worker
            t.hostname, t.addrport = r.host, r.addrport
            t._output = frame(frames, r.output_frame)
            for o in r.outputs:
                data = frame(frames, o.frame)
                if data is not None:
                    _deliver_output(t, o.remote_name, data, o.directory)
            spilled = [o for o in r.outputs if o.spilled and o.cache_name is not None]
            if r.output_spill is not None or spilled:
                self._fetch_spilled(t, r, spilled)  # done once every piece is here
            else:
                done.append(t)
        self._hand_back(done)

    def _hand_back(self, done: list[Task]) -> None:
        sh = self.shared
        if sh.on_done is not None:  # before anyone sees them done (a cache keeps them first)
            for t in done:
                sh.on_done(t)
        with sh.cv:
            for t in done:
                assert t.id is not None
                del sh.tasks[t.id]
                sh.outstanding.pop(t.id, None)
                if t._future is not None:
                    sh.out.acks.append(t.id)  # futures users consume through the future
                else:
                    sh.done.append(t)
            sh.cv.notify_all()
        for t in done:
            if t._future is not None and not t._future.done():
                t._future.set_result(t)

    # ------------------------------------------------------------------ results too large to travel inline

    def _fetch_spilled(self, t: Task, r: ClientResult, outputs: list[OutputFile]) -> None:
        """A result or output left on its worker (too large for a message): pull each in pieces
        through the manager, then hand the task back and let the worker delete them."""
        assert t.id is not None
        names = [
            *([r.output_spill] if r.output_spill is not None else []),
            *(o.cache_name for o in outputs if o.cache_name),
        ]
        job = _Spill(t, len(names))
        self._spilling[t.id] = job

        def arrived(name: CacheName, pull: Pull) -> None:
            if pull.error is not None:
                t.error = f"{t.error + '; ' if t.error else ''}{name} could not be fetched: {pull.error}"
            elif name == r.output_spill:
                t._output = pull.sink_path().read_bytes() if pull.sink_path() else b""
            else:
                o = next(o for o in outputs if o.cache_name == name)
                _deliver_output(t, o.remote_name, pull.sink_path(), o.directory)
            pull.discard()
            job.left -= 1
            if job.left == 0:
                del self._spilling[t.id]  # type: ignore[arg-type]
                with self.shared.lock:
                    for n in names:
                        self.shared.out.undeclare(n)  # the worker may delete its copy
                self._hand_back([t])

        for name in names:
            self.pull(name, functools.partial(arrived, name))

    def pull(self, name: CacheName, on_done: Callable[[Pull], None]) -> Pull:
        """Fetch ``name`` from the manager in pieces, from the I/O thread; ``on_done`` is called
        there once it is whole (or failed: ``pull.error``)."""
        p = Pull(name, Path(self.spool) / f"{name}.{uuid.uuid4().hex[:8]}", on_done)
        self._pulls.append(p)
        self._ask_pieces(p)
        return p

    def _ask_pieces(self, p: Pull) -> None:
        for offset, length in p.puller.requests(time.monotonic()):
            self.ask_piece(p.name, offset, length, functools.partial(self._piece_arrived, p))

    def ask_piece(
        self, name: CacheName, offset: int, length: int, then: Callable[[FetchedFile, bytes | None], None]
    ) -> int:
        """Ask the manager for one piece; ``then(reply, data)`` runs on the I/O thread."""
        fut: concurrent.futures.Future[tuple[FetchedFile, bytes | None]] = concurrent.futures.Future()
        fut.add_done_callback(lambda f: then(*f.result()))
        sh = self.shared
        with sh.lock:
            sh.fetch_seq += 1
            ask = FetchFile(request=sh.fetch_seq, cache_name=name, offset=offset, length=length)
            sh.fetches[ask.request] = (ask, fut)
            sh.out.add_control(ask)
        self.wake()
        return ask.request

    def _piece_arrived(self, p: Pull, reply: FetchedFile, data: bytes | None) -> None:
        if p.finished:
            return
        p.take(reply, data)
        if p.finished:
            self._pulls.remove(p)
            p.on_done(p)
        else:
            self._ask_pieces(p)

    def _tick_pulls(self) -> None:
        """Pieces asked long ago and never answered are asked again."""
        for p in list(self._pulls):
            self._ask_pieces(p)

    def _adopt(self, specs: list[TaskSpec]) -> None:
        """attach=True: take on the tasks an earlier process under our name left behind."""
        from kubevine.serverless import task_from_spec

        sh = self.shared
        with sh.cv:
            for spec in specs:
                if spec.id in sh.tasks:
                    continue
                t = task_from_spec(spec)
                t._manager = self.fetcher  # a value kept on a worker is fetched through the Manager
                sh.tasks[spec.id] = t
                sh.attached.append(t)
            sh.cv.notify_all()
        log.info("attached to %d task(s) of client %s", len(specs), self.name)

    def _resubmit(self, new_manager: bool) -> None:
        """After a reconnect, send every unfinished task again with the client files it needs
        (and the libraries): the manager keeps what it already had and takes the rest. Needed
        for a new manager (it may not have stored everything) and for the same one (messages
        still queued on the abandoned socket were dropped with it)."""
        sh = self.shared
        with sh.lock:
            box = sh.out
            again = [item for tid, item in sh.outstanding.items() if tid in sh.tasks]
            queued = {s.id for s, _ in box.pending}
            first = [item for item in again if item[0].id not in queued]
            box.pending[:0] = first
            box.control = [(m, f, before + len(first)) for m, f, before in box.control]
            libs = sh.libraries.values()
            box.setup[:0] = [(InstallLibrary(spec=lib.spec(), frame=0), [lib.payload()]) for lib in libs]
            files: dict[CacheName, Upload] = {}
            for spec, _ in again:
                task = sh.tasks[spec.id]
                for f in [*(f for f, _r in task.inputs), *task.environments]:
                    for u in f.uploads():
                        name = u.cache_name()
                        if name not in files:
                            try:
                                files[name] = u.upload()
                            except OSError as e:  # its task fails on the manager, saying so
                                log.error("task %s: input %s cannot be read again: %s", spec.id, name, e)
            for up in box.files:
                up.sent = 0  # what the old connection carried of it is gone with it
            queued_files = {up.name for up in box.files}
            box.files[:0] = [up for n, up in files.items() if n not in queued_files]
            box.sent_files = set(files) | queued_files
        what = "a new manager" if new_manager else "the manager"
        log.warning("reconnected to %s: sent %d unfinished task(s) again", what, len(again))


def write_atomic(path: Path, data: bytes, directory: bool = False) -> None:
    """Put a file (or a directory, from its tar) at ``path``, replacing what is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.kubevine-tmp-{uuid.uuid4().hex[:8]}")
    if directory:
        filetree.unpack(data, tmp)
    else:
        tmp.write_bytes(data)
    filetree.place(tmp, path)


@dataclass(eq=False)
class _Spill:
    task: Task
    left: int  # files still to arrive


@dataclass(eq=False)
class Pull:
    """One file coming from the manager in pieces (kubevine.chunks): asked with a window,
    written where it lands in a temporary file, finished when whole or when refused."""

    name: CacheName
    tmp: Path
    on_done: Callable[[Pull], None] = field(default=lambda p: None)
    puller: Puller = field(default_factory=Puller)
    sink: Sink | None = None
    whole: bytes | None = None  # a manager that answers with the whole file at once
    directory: bool = False
    error: str | None = None
    finished: bool = False

    def take(self, reply: FetchedFile, data: bytes | None) -> None:
        if reply.error is not None or data is None:
            self.error, self.finished = reply.error or "no content", True
            return
        self.directory = reply.directory
        if reply.total is None:  # the whole file in one answer
            self.whole, self.finished = data, True
            return
        try:
            self.puller.got(reply.offset, reply.total)
            if self.sink is None:
                self.sink = Sink(self.tmp, reply.total, reply.directory)
            self.sink.write(reply.offset, data)
        except ValueError as e:
            self.error, self.finished = f"a bad piece: {e}", True
            return
        self.finished = self.sink.complete()

    def sink_path(self) -> Path:
        """The finished file on disk (written out if it came whole)."""
        if self.whole is not None:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.write_bytes(self.whole)
            self.whole = None
        return self.tmp

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _deliver_output(t: Task, remote: str, data: bytes | Path, directory: bool) -> None:
    """Put an output where the task's author asked: a local file (or directory), or an output
    buffer; a failure to write is told in the task's error, and the result still arrives."""
    for f, name in t.outputs:
        if name != remote:
            continue
        if f.kind == FileKind.BUFFER:
            f.data = data if isinstance(data, bytes) else data.read_bytes()
        elif f.path is not None:
            try:
                if isinstance(data, bytes):
                    write_atomic(f.path, data, directory)
                elif directory:
                    tmp = f.path.with_name(f".{f.path.name}.kubevine-tmp-{uuid.uuid4().hex[:8]}")
                    filetree.unpack(data, tmp)
                    filetree.place(tmp, f.path)
                else:
                    f.path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(data), f.path)
            except (OSError, tarfile.TarError) as e:
                log.error("task %s: could not write output %s to %s: %s", t.id, remote, f.path, e)
                t.error = f"{t.error + '; ' if t.error else ''}output {remote} not written: {e}"
