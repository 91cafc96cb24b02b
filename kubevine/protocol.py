"""The wire protocol: one typed model per message, shared by every end.

A message on the wire is a ZeroMQ multipart message: frame 0 is the JSON header (one of the
models below, told apart by its ``type`` field), frames 1..n are raw bytes (pickled
functions, stdout, file contents). Headers refer to binary frames by index (``frame``
fields count from 0 = the first frame after the header); binary data never sits inside JSON.

Batching is built in: submissions, dispatches, worker updates and client results carry
lists, so a busy cycle costs one message per peer, not one per task. A batch of small
frames (a pickled argument or result per call) travels packed into one frame (a msgpack
array of byte strings, flagged by a 0 byte before the header): ZeroMQ then moves one frame
instead of thousands, and :func:`decode` unpacks them, so frame indices mean the same.

Every connection starts with :class:`Hello` carrying the protocol version and the workflow's
token; the manager answers :class:`Welcome` or :class:`Refused` (and closes nothing else).
"""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Iterator, Sequence
from typing import Annotated, Generic, Literal, TypeVar

import msgpack
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.resources import Resources

# 2: small frames packed into one, payload frame indices on assignments; 3: values kept as temp
# outputs; 4: acknowledgements ride on dispatches
PROTOCOL_VERSION = 4

# A PythonTask's or FunctionCall's return value kept on its worker (``enable_temp_output``):
# the name of the temp output it is written to, as ``cloudpickle.dumps(value)``.
VALUE_FILE = ".kubevine-value.pkl"  # a reserved name: no input or output of the user's can take it
DEFAULT_PORT = 9123


class ProtocolError(Exception):
    """A message could not be decoded; the text says why, for the sender."""


# --------------------------------------------------------------------------- names
# Names that end up in paths on a worker or the manager are checked where every message is
# read, so a bad one is refused (an error to its sender) before any end acts on it.

MAX_NAME = 200  # characters in a cache name, a library name, an id
MAX_PIECE = 1 << 20  # bytes of a file in one message (files travel in pieces: kubevine.chunks)
MAX_MESSAGE = 64 << 20  # bytes: the largest message any socket takes, before or after a hello
MAX_REMOTE = 4096  # characters in a sandbox path


def check_remote_name(name: str) -> str:
    """A task's name for a file in its sandbox: relative, inside it (no ``..``), no NUL."""
    if not name or len(name) > MAX_REMOTE or "\x00" in name:
        raise ValueError(f"remote name {name[:80]!r} must be 1-{MAX_REMOTE} characters without NUL")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or not parts or ".." in parts or any(len(p) > 255 for p in parts):
        raise ValueError(f"remote name {name[:80]!r} must be a relative path inside the sandbox")
    return name


_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$"  # no "/", no leading dot (the cache's own files), no NUL
#: a file's name in every cache (``file-<sha256>``, ``temp-<sha256>``, ...)
CacheNameField = Annotated[CacheName, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=_NAME)]
#: a sandbox-relative path a task reads or writes
RemoteName = Annotated[str, AfterValidator(check_remote_name)]
#: a library's or worker's name (they name files, folders and Redis keys): no "/", no
#: control character, no leading dot; anything else (a lambda's library is "<lambda>-...")
SafeName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[^/\x00-\x1f.][^/\x00-\x1f]*$")
]
WorkerIdField = Annotated[
    WorkerId, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[^/\x00-\x1f.][^/\x00-\x1f]*$")
]
ClientIdField = Annotated[
    ClientId, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[^\x00-\x1f]+$")
]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


_M = TypeVar("_M", bound=_Msg)


# --------------------------------------------------------------------------- enums


class TaskKind(enum.StrEnum):
    COMMAND = "command"  # a shell command in a sandbox
    PYTHON = "python"  # PythonTask: a pickled function run in a fresh interpreter
    CALL = "call"  # FunctionCall: a function run inside a warm library


class FileKind(enum.StrEnum):
    LOCAL = "local"  # a file or directory on the client's disk
    BUFFER = "buffer"  # bytes given by the client
    URL = "url"  # fetched by the worker
    TEMP = "temp"  # produced on a worker, stays there
    UNTAR = "untar"  # another file, unpacked on the worker
    MINITASK = "minitask"  # produced on the worker by running a task


class CacheLevel(enum.StrEnum):
    TASK = "task"  # removed when the task ends
    WORKFLOW = "workflow"  # removed when the workflow ends (kubevine's default)
    WORKER = "worker"  # kept while the worker lives
    FOREVER = "forever"  # survives worker restarts


class Outcome(enum.StrEnum):
    """Why an attempt ended (``t.outcome``; ``t.result`` is TaskVine's name for it)."""

    SUCCESS = "success"  # ran; exit code 0; outputs present
    EXIT_NONZERO = "exit_nonzero"  # ran to the end; nonzero exit
    OUTPUT_MISSING = "output_missing"  # ran; a declared output was not produced
    INPUT_MISSING = "input_missing"  # an input could not be staged
    EXCEPTION = "exception"  # a Python function raised
    SANDBOX_ERROR = "sandbox_error"  # the worker could not run it (spawn failed, ...)
    WORKER_LOST = "worker_lost"  # the worker died or was drained with it
    CANCELLED = "cancelled"
    UNSCHEDULABLE = "unschedulable"  # larger than any worker (only when asked to give up)
    LIBRARY_ERROR = "library_error"  # unknown library/function, library crashed
    MAX_WALL_TIME = "max_wall_time"  # ran longer than its time_max
    MAX_END_TIME = "max_end_time"  # still running (or not started) at its time_end
    FORSAKEN = "forsaken"  # returned without running (lost workers) more than max_forsaken times
    FIXED_LOCATION_MISSING = "fixed_location_missing"  # a strict input is on no connected worker


# --------------------------------------------------------------------------- parts


class FileBinding(_Msg):
    """A file attached to a task under a name in its sandbox."""

    cache_name: CacheNameField | None = None  # None for outputs whose content is not known yet
    remote_name: RemoteName
    kind: FileKind
    cache: CacheLevel = CacheLevel.WORKFLOW
    size: int | None = None
    url: str | None = None  # for FileKind.URL
    to_client: bool = False  # output: send the content back to the client
    source: FileBinding | None = None  # UNTAR: the archive the worker unpacks
    mini: MiniTaskSpec | None = None  # MINITASK: the command the worker runs to make it
    mode: int | None = Field(None, ge=0, le=0o7777)  # its mode in the sandbox (default: the source's)
    peer_transfer: bool = True  # False: workers never fetch it from each other
    symlink: bool = False  # input: a symbolic link into the cache instead of a hard link
    strict: bool = False  # input: run only where a copy already is (TaskVine's strict_input)
    watch: bool = False  # output: streamed back while the task runs (appended content)


class MiniTaskSpec(_Msg):
    """A command a worker runs to make a file (``declare_minitask``): its inputs are staged
    like a task's, and what it leaves at ``output`` in its sandbox is cached."""

    command: str
    inputs: list[FileBinding] = Field(default_factory=list)
    output: RemoteName
    env: dict[str, str] = Field(default_factory=dict)
    time_max: float | None = None  # seconds before it is killed (and the file is not made)


FileBinding.model_rebuild()


def walk_bindings(bindings: Sequence[FileBinding]) -> Iterator[FileBinding]:
    """Every file a list of inputs needs: each input, then (depth first) what it is made from
    (an untar's archive, a minitask's inputs)."""
    for b in bindings:
        yield b
        if b.source is not None:
            yield from walk_bindings([b.source])
        if b.mini is not None:
            yield from walk_bindings(b.mini.inputs)


def value_output(outputs: Sequence[FileBinding]) -> FileBinding | None:
    """The temp output holding a kept return value (``enable_temp_output``), if there is one."""
    return next((b for b in outputs if b.remote_name == VALUE_FILE and b.kind == FileKind.TEMP), None)


class TaskSpec(_Msg):
    """What a client submits: everything needed to run the task, nothing about its state."""

    id: TaskId
    kind: TaskKind = TaskKind.COMMAND
    command: str | None = None
    library: SafeName | None = None
    function: str | None = None
    payload: int | None = None  # in a Submit: frame index of the pickled function/arguments
    resources: Resources = Resources(cores=1)
    env: dict[str, str] = Field(default_factory=dict)
    inputs: list[FileBinding] = Field(default_factory=list)
    outputs: list[FileBinding] = Field(default_factory=list)
    retries: int = Field(0, ge=0)
    priority: float = 0.0
    tag: str | None = None
    category: str | None = None
    time_max: float | None = None  # seconds
    time_end: float | None = None  # epoch seconds: killed (or never started) after this
    time_start: float | None = None  # epoch seconds: not dispatched before this
    max_forsaken: int | None = Field(None, ge=0)  # worker losses it survives (None: the manager's rule)
    features: list[str] = Field(default_factory=list)  # only workers that have them
    environments: list[RemoteName] = Field(default_factory=list)  # unpacked envs it runs in (inputs)


class FileSource(_Msg):
    """Where a worker should fetch a file from, in the order the manager prefers."""

    kind: Literal["manager", "peer", "url"]
    address: str | None = None  # peer transfer address or URL
    worker: WorkerIdField | None = None  # the peer, for accounting


class StageIn(_Msg):
    cache_name: CacheNameField
    sources: list[FileSource]
    checksum: str | None = None  # sha256 of the content, when the manager knows it
    size: int | None = None
    cache: CacheLevel = CacheLevel.WORKFLOW


class TransferRecord(_Msg):
    """One file arriving in a worker's cache (or failing to)."""

    cache_name: CacheNameField
    source: Literal["manager", "peer", "url", "node"]
    source_worker: WorkerIdField | None = None
    bytes: int = 0
    seconds: float = 0.0
    ok: bool = True
    error: str | None = None


class CachedFile(_Msg):
    cache_name: CacheNameField
    size: int
    checksum: str | None = None


class Assignment(_Msg):
    """One task sent to a worker for one attempt."""

    spec: TaskSpec  # as submitted (its ``payload`` index refers to the Submit, not to this message)
    attempt: int
    stage: list[StageIn] = Field(default_factory=list)
    payload: int | None = None  # frame index of the pickled function/arguments in this Dispatch


class OutputFile(_Msg):
    remote_name: RemoteName
    cache_name: CacheNameField | None = None  # temps: the name it is cached under on the worker
    size: int = 0
    checksum: str | None = None
    frame: int | None = None  # content, for to_client outputs
    directory: bool = False  # the output is a directory (its frame is a tar of it)
    spilled: bool = False  # too large to travel inline: kept on the worker as ``cache_name``, fetch it


class MeasuredResources(_Msg):
    """What an attempt used, measured on its worker (TaskVine's ``t.resources_measured``)."""

    memory: int = 0  # MB: peak resident set of its process (the largest of it and its children)
    cpu_time: float = 0.0  # seconds of CPU, user and system
    wall_time: float = 0.0  # seconds from start to exit
    disk: int = 0  # MB in its sandbox when it ended


class AttemptResult(_Msg):
    """How one attempt ended, as the worker saw it."""

    task_id: TaskId
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    output_frame: int | None = None  # stdout (command) or pickled return value
    output_spill: CacheNameField | None = None  # ... too large to travel inline: kept on the worker
    error: str | None = None  # a human message when it did not run
    wall_time: float = 0.0
    started: float = 0.0  # epoch seconds
    outputs: list[OutputFile] = Field(default_factory=list)
    resources_measured: MeasuredResources | None = None


class TaskRef(_Msg):
    task_id: TaskId
    attempt: int


class WorkerInfo(_Msg):
    """What a worker tells the manager about itself when it (re)connects."""

    worker_id: WorkerIdField
    node: str
    host: str
    pid: int
    resources: Resources
    transfer_address: str | None = None
    pod: str | None = None  # Kubernetes pod name, when it runs in one
    cache_group: str = ""  # workers with the same group share one cache directory (node + path)
    cached: list[CacheNameField] = Field(default_factory=list)
    running: list[TaskRef] = Field(default_factory=list)
    libraries: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)  # --feature: what tasks may ask for


# --------------------------------------------------------------------------- messages


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    protocol: int
    token: str
    role: Literal["client", "worker", "admin"]
    client: ClientIdField | None = None
    worker: WorkerInfo | None = None
    attach: bool = False  # a client: tell me every task of mine you hold (Welcome.tasks)


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    workflow: str
    manager_id: str  # changes every manager start: a new one means "say hello again"
    heartbeat_interval: float
    heartbeat_timeout: float
    first_task_id: TaskId | None = None  # clients: start of their id block
    id_block: int = 0
    tasks: list[TaskSpec] = Field(default_factory=list)  # attach: this client's tasks not yet collected


class Refused(_Msg):
    """The connection is not accepted (bad token, protocol mismatch, ...)."""

    type: Literal["refused"] = "refused"
    reason: str


class ErrorMsg(_Msg):
    """Something the peer sent could not be honoured; nothing else is affected."""

    type: Literal["error"] = "error"
    code: str
    message: str
    task_ids: list[TaskId] = Field(default_factory=list)


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    manager_id: str | None = None


class IdBlockRequest(_Msg):
    type: Literal["id_block_request"] = "id_block_request"


class IdBlock(_Msg):
    type: Literal["id_block"] = "id_block"
    first_task_id: TaskId
    count: int


class FileMeta(_Msg):
    """A piece of a client file: ``size`` bytes (frame ``frame``) at ``offset`` of ``total``."""

    cache_name: CacheNameField
    size: int = Field(ge=0)
    frame: int
    offset: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0)  # None: the piece is the whole file


class PieceRef(_Msg):
    """Which piece of a file to send."""

    cache_name: CacheNameField
    offset: int = Field(0, ge=0)
    length: int = Field(MAX_PIECE, ge=1, le=MAX_PIECE)


class PutFiles(_Msg):
    """Client → manager: contents of declared local files and buffers."""

    type: Literal["put_files"] = "put_files"
    files: list[FileMeta]


class Submit(_Msg):
    type: Literal["submit"] = "submit"
    tasks: list[TaskSpec]


class Cancel(_Msg):
    type: Literal["cancel"] = "cancel"
    task_ids: list[TaskId] = Field(default_factory=list)
    tag: str | None = None


class UndeclareFiles(_Msg):
    """Client → manager: these files are no longer needed (``m.undeclare_file``): workers
    drop their copies; a temp's producer is forgotten (it will not be run again)."""

    type: Literal["undeclare_files"] = "undeclare_files"
    cache_names: list[CacheNameField]


class ForgetFiles(_Msg):
    """Manager → worker: delete these files from the cache (once no running task reads them)."""

    type: Literal["forget_files"] = "forget_files"
    cache_names: list[CacheNameField]


class ClientResult(_Msg):
    """The final word on a task, as the client sees it."""

    task_id: TaskId
    state: Literal["done", "failed", "cancelled"]
    attempts: int
    outcome: Outcome
    exit_code: int | None = None
    output_frame: int | None = None
    output_spill: CacheNameField | None = None  # stdout or value kept on a worker (fetch it)
    error: str | None = None
    wall_time: float = 0.0
    worker: WorkerIdField | None = None
    host: str | None = None  # the worker's host name (TaskVine's t.hostname)
    addrport: str | None = None  # its address (TaskVine's t.addrport)
    outputs: list[OutputFile] = Field(default_factory=list)


class Results(_Msg):
    type: Literal["results"] = "results"
    results: list[ClientResult]


class ResultsAck(_Msg):
    """Client → manager: these results are safely in the client's hands; forget them."""

    type: Literal["results_ack"] = "results_ack"
    task_ids: list[TaskId]


class Dispatch(_Msg):
    type: Literal["dispatch"] = "dispatch"
    tasks: list[Assignment]
    # results of this worker now recorded (an UpdateAck's, carried here when a dispatch goes to
    # the worker anyway: with many workers and short tasks, one message per task fewer)
    acks: list[TaskRef] = Field(default_factory=list)


class Kill(_Msg):
    """Manager → worker: stop these attempts (cancelled or superseded)."""

    type: Literal["kill"] = "kill"
    tasks: list[TaskRef]


class WatchedPiece(_Msg):
    """New content of a watched output (``add_output(watch=True)``) of a running attempt: the
    bytes in ``frame`` go at ``offset`` of the file (the final content comes with the result)."""

    task_id: TaskId
    attempt: int
    remote_name: RemoteName
    offset: int = Field(ge=0)
    frame: int


class WorkerUpdate(_Msg):
    """Worker → manager: attempts started and attempts finished since the last update."""

    type: Literal["worker_update"] = "worker_update"
    started: list[TaskRef] = Field(default_factory=list)
    results: list[AttemptResult] = Field(default_factory=list)
    cached: list[CacheNameField] = Field(default_factory=list)  # files that entered its cache
    evicted: list[CacheNameField] = Field(default_factory=list)
    transfers: list[TransferRecord] = Field(default_factory=list)
    watched: list[WatchedPiece] = Field(default_factory=list)  # watched outputs as they grow


class UpdateAck(_Msg):
    """Manager → worker: these results are recorded; the worker may forget them."""

    type: Literal["update_ack"] = "update_ack"
    tasks: list[TaskRef]


class FileRequest(_Msg):
    """Worker → manager: send me these files."""

    type: Literal["file_request"] = "file_request"
    cache_names: list[CacheNameField] = Field(default_factory=list)  # whole files (one message each)
    pieces: list[PieceRef] = Field(default_factory=list)


class FileData(_Msg):
    """Manager → worker: file contents (``frame``) or why they cannot be had (``error``)."""

    type: Literal["file_data"] = "file_data"
    cache_name: CacheNameField
    frame: int | None = None
    error: str | None = None
    directory: bool = False  # the frame is (a piece of) a tar of a directory
    offset: int = Field(0, ge=0)  # where the frame goes in the file
    total: int | None = Field(None, ge=0)  # the file's size (None: the frame is the whole file)


class FetchFile(_Msg):
    """Client → manager: send me this file's content, from wherever it is held
    (``m.fetch_file``). Answered by :class:`FetchedFile` with the same ``request``."""

    type: Literal["fetch_file"] = "fetch_file"
    request: int
    cache_name: CacheNameField
    offset: int = Field(0, ge=0)
    length: int | None = Field(None, ge=1, le=MAX_PIECE)  # None: the whole file in one answer


class FetchedFile(_Msg):
    """Manager → client: a fetched file's content (``frame``; a tar when ``directory``), or
    why it cannot be had (``error``)."""

    type: Literal["fetched_file"] = "fetched_file"
    request: int
    cache_name: CacheNameField
    frame: int | None = None
    error: str | None = None
    directory: bool = False
    source: str | None = None  # "manager", or the worker it came from
    offset: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0)  # the file's size (None: the frame is the whole file)


class PeerLost(_Msg):
    """Manager → worker: this peer is gone; a fetch from it fails now and moves on to the
    next source instead of waiting for an answer."""

    type: Literal["peer_lost"] = "peer_lost"
    worker: WorkerIdField
    address: str | None = None


class StatusRequest(_Msg):
    type: Literal["status_request"] = "status_request"
    workers: bool = True  # False: counts and demand only, without one entry per worker


class StatusReply(_Msg):
    type: Literal["status_reply"] = "status_reply"
    status: str  # JSON of kubevine.stats.ManagerStatus (kept opaque to keep this module small)


class DrainWorkers(_Msg):
    """Admin → manager: stop giving these workers tasks, let them finish, then release them."""

    type: Literal["drain_workers"] = "drain_workers"
    worker_ids: list[WorkerIdField]


class Tune(_Msg):
    """Client → manager: one of the workflow's settings (TaskVine's ``m.tune``, and
    ``enable/disable_peer_transfers`` as ``peer-transfers``)."""

    type: Literal["tune"] = "tune"
    name: str = Field(max_length=100)
    value: float


class Drain(_Msg):
    """Manager → worker: finish what you run, take nothing new, then say goodbye and exit."""

    type: Literal["drain"] = "drain"


class Goodbye(_Msg):
    type: Literal["goodbye"] = "goodbye"
    reason: str


class LibrarySpec(_Msg):
    """A library: functions kept warm in a long-lived process on a worker."""

    name: SafeName
    functions: list[str]
    hoisting_modules: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    exec_mode: Literal["fork", "direct"] = "fork"
    slots: int = Field(1, ge=1)  # calls at once
    resources: Resources = Resources(cores=1)
    has_context: bool = False
    inputs: list[FileBinding] = Field(default_factory=list)  # in the library's working directory
    environments: list[RemoteName] = Field(default_factory=list)  # unpacked envs it runs in (inputs)


class InstallLibrary(_Msg):
    """Client → manager: make this library available (payload: pickled functions and
    context setup). Manager → worker: start it here."""

    type: Literal["install_library"] = "install_library"
    spec: LibrarySpec
    frame: int = 0
    stage: list[StageIn] = Field(default_factory=list)  # manager -> worker: fetch its inputs first


class RemoveLibrary(_Msg):
    """Client → manager, manager → worker: stop this library."""

    type: Literal["remove_library"] = "remove_library"
    name: SafeName


class LibraryStatus(_Msg):
    """Worker → manager: a library instance is ready, failed to start, or is gone."""

    type: Literal["library_status"] = "library_status"
    name: SafeName
    state: Literal["ready", "failed", "gone"]
    error: str | None = None


# --------------------------------------------------------------------------- directions
# Each end decodes only what may be sent to it: a message of another direction is refused as
# :class:`UnexpectedMessage` before its body is read, and each dispatcher is a ``match`` over
# its union that mypy checks for exhaustiveness (``assert_never``).

FromWorker = (
    Hello | Heartbeat | WorkerUpdate | FileRequest | LibraryStatus | Drain | Goodbye
)  # worker -> manager
FromClient = (
    Hello
    | Heartbeat
    | Submit
    | PutFiles
    | ResultsAck
    | InstallLibrary
    | RemoveLibrary
    | Cancel
    | UndeclareFiles
    | IdBlockRequest
    | StatusRequest
    | FetchFile
    | Tune
    | Goodbye
)  # client -> manager
FromAdmin = Hello | Heartbeat | StatusRequest | DrainWorkers | Goodbye  # admin (status, operator) -> manager
ToManager = FromWorker | FromClient | FromAdmin
#: what a worker acts on; Welcome, Refused and Heartbeat are its session's (kubevine.session)
WorkerWork = (
    Dispatch
    | UpdateAck
    | Kill
    | InstallLibrary
    | RemoveLibrary
    | FileData
    | ForgetFiles
    | PeerLost
    | Drain
    | ErrorMsg
)
ToWorker = Welcome | Refused | Heartbeat | WorkerWork  # manager -> worker
#: what a client acts on; Welcome, Refused and Heartbeat are its session's
ClientWork = Results | IdBlock | StatusReply | FetchedFile | ErrorMsg
ToClient = Welcome | Refused | Heartbeat | ClientWork  # manager -> client (and admin sessions)
Message = ToManager | ToWorker | ToClient

_D = TypeVar("_D")


class Direction(Generic[_D]):
    """The messages one end accepts: their ``type`` tags and a validator for exactly those."""

    def __init__(self, name: str, union: object) -> None:
        self.name = name
        self.adapter: TypeAdapter[_D] = TypeAdapter(Annotated[union, Field(discriminator="type")])  # type: ignore[arg-type]
        members = typing.get_args(union)
        self.tags = frozenset(m.model_fields["type"].default for m in members)


TO_MANAGER: Direction[ToManager] = Direction("anything -> manager", ToManager)
FROM_WORKER: Direction[FromWorker] = Direction("worker -> manager", FromWorker)
FROM_CLIENT: Direction[FromClient] = Direction("client -> manager", FromClient)
FROM_ADMIN: Direction[FromAdmin] = Direction("admin -> manager", FromAdmin)
TO_WORKER: Direction[ToWorker] = Direction("manager -> worker", ToWorker)
TO_CLIENT: Direction[ToClient] = Direction("manager -> client", ToClient)
ANY: Direction[Message] = Direction("any message", Message)


class UnexpectedMessage(ProtocolError):
    """A well-formed message that this end does not accept (its ``tag``)."""

    def __init__(self, tag: str, direction: str) -> None:
        super().__init__(f"unexpected message type {tag!r} (not one of {direction})")
        self.tag = tag


PACKED = b"\x00"  # a header that starts with this byte is followed by one packed frame
PACK_BELOW = 1 << 16  # frames at least this large travel on their own (no copy into a pack)


def encode(msg: _Msg, frames: Sequence[bytes] = ()) -> list[bytes]:
    """Header plus binary frames, ready for ``send_multipart`` (small frames packed)."""
    head = msg.model_dump_json(exclude_none=True).encode()
    if len(frames) > 1 and max(map(len, frames)) < PACK_BELOW:
        return [PACKED + head, msgpack.packb(frames)]
    return [head, *frames]


_set = object.__setattr__


def replace(msg: _M, **changes: object) -> _M:
    """A shallow copy of ``msg`` with some fields changed, not validated: for values that
    are ours to set (frame indices moved when parts share a message). Three times cheaper
    than ``model_copy``, which matters once per result at thousands of results a second."""
    new = object.__new__(type(msg))
    d = dict(msg.__dict__)
    d.update(changes)
    _set(new, "__dict__", d)
    _set(new, "__pydantic_fields_set__", msg.__pydantic_fields_set__ | changes.keys())
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new


BIG_FRAME = 1 << 16


def send(sock: object, parts: list[bytes]) -> None:
    """Send a multipart message; frames are copied unless large (zero-copy costs more for
    small frames than copying them)."""
    big = any(len(p) >= BIG_FRAME for p in parts)
    sock.send_multipart(parts, copy=not big)  # type: ignore[attr-defined]


_TAG = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]{1,40})"')


def message_type(head: bytes) -> str | None:
    """The ``type`` of a header, read from its first bytes (every model writes it first), or
    None when it is not there; lets an end refuse a message without reading its body."""
    m = _TAG.match(head, 1 if head[:1] == PACKED else 0)
    return m.group(1).decode() if m else None


@typing.overload
def decode(parts: Sequence[bytes]) -> tuple[Message, list[bytes]]: ...


@typing.overload
def decode(parts: Sequence[bytes], direction: Direction[_D]) -> tuple[_D, list[bytes]]: ...


def decode(
    parts: Sequence[bytes], direction: Direction[typing.Any] | None = None
) -> tuple[typing.Any, list[bytes]]:
    """Parse a multipart message sent to ``direction``; :class:`ProtocolError` says what is
    wrong with it (:class:`UnexpectedMessage` when it is well formed but not accepted here)."""
    direction = direction or ANY
    if not parts:
        raise ProtocolError("empty message")
    head = parts[0]
    tag = message_type(head)
    if tag is not None and tag not in direction.tags:
        raise _unexpected(tag, direction)
    if head[:1] == PACKED:
        head = head[1:]
        frames = _unpack(parts[1:])
    else:
        frames = list(parts[1:])
    try:
        msg = direction.adapter.validate_json(head)
    except ValidationError as e:
        first = e.errors()[0]
        if first.get("type") == "union_tag_invalid":
            raise _unexpected(str((first.get("ctx") or {}).get("tag")), direction) from e
        where = ".".join(str(p) for p in first.get("loc", ())) or "header"
        raise ProtocolError(f"malformed message: {where}: {first.get('msg')}") from e
    return msg, frames


def _unexpected(tag: str, direction: Direction[typing.Any]) -> ProtocolError:
    if tag not in ANY.tags:
        return ProtocolError(f"malformed message: unknown message type {tag!r}")
    return UnexpectedMessage(tag, direction.name)


def _unpack(parts: Sequence[bytes]) -> list[bytes]:
    if len(parts) != 1:
        raise ProtocolError(f"malformed message: packed frames: one frame expected, not {len(parts)}")
    try:
        frames = msgpack.unpackb(parts[0], use_list=True)
    except Exception as e:  # msgpack raises several types for bad input
        raise ProtocolError(f"malformed message: packed frames cannot be read: {e}") from e
    if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
        raise ProtocolError("malformed message: packed frames must be an array of byte strings")
    return frames


def frame(frames: Sequence[bytes], index: int | None) -> bytes | None:
    """The binary frame a header points at, or a ProtocolError if it points nowhere."""
    if index is None:
        return None
    if not 0 <= index < len(frames):
        raise ProtocolError(f"frame index {index} out of range (message has {len(frames)})")
    return frames[index]
