"""Tasks and file declarations as users write them, with TaskVine's names.

A :class:`Task` is built in user code (``Task("cmd")``, setters or keywords), submitted
to a :class:`~kubevine.client.Manager`, and filled in when its result arrives
(``t.output``, ``t.exit_code``, ``t.result``). Files are declared on the manager
(``m.declare_file``) and attached to tasks (``t.add_input(f, "name")``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shlex
import stat
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubevine import filetree
from kubevine.digest import sha256_bytes, sha256_file, sha256_text
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    MAX_PIECE,
    CacheLevel,
    FileBinding,
    FileKind,
    MiniTaskSpec,
    Outcome,
    TaskKind,
    TaskSpec,
    check_remote_name,
)
from kubevine.resources import Resources
from kubevine.states import ClientState
from kubevine.taskvine import Result, ran, result_of

log = logging.getLogger(__name__)

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def hash_path(path: Path) -> str:
    """Content hash of a file, memoised on (path, size, mtime) so big files hash once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    h = _HASH_MEMO.get(key)
    if h is None:
        h = _HASH_MEMO[key] = sha256_file(path)
    return h


@dataclass(eq=False)
class Upload:
    """One client file on its way to the manager, piece by piece (see kubevine.chunks)."""

    name: CacheName
    data: bytes | None = None  # a small file or a buffer, whole
    path: Path | None = None  # a large file (or a directory's tar) read a piece at a time
    size: int = 0
    sent: int = 0  # bytes handed to the socket so far
    temporary: bool = False  # path is ours (a packed directory): removed once sent

    def piece(self, length: int) -> bytes:
        if self.data is not None:
            return self.data[self.sent : self.sent + length]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(self.sent)
            return f.read(length)

    def done(self) -> None:
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(eq=False)
class File:
    """A declared file: where its data comes from, and how long workers keep it."""

    kind: FileKind
    cache: CacheLevel = CacheLevel.WORKFLOW
    path: Path | None = None  # LOCAL: the client-side path (input source or output target)
    data: bytes | None = None  # BUFFER
    url: str | None = None
    name: CacheName | None = None  # TEMP: set when the task that writes it is submitted; URL: at declare
    archive: File | None = None  # UNTAR: the archive to unpack
    mini: Task | None = None  # MINITASK: the command task that makes it
    mini_output: str | None = None  # MINITASK: where that task leaves it in its sandbox
    nonce: str | None = None  # TEMP: makes its name unique to this declaration (a kept value)
    peer_transfer: bool = True  # False: workers never fetch it from each other
    unlink_when_done: bool = False  # LOCAL: the client deletes it when it is undeclared
    mode: int | None = None  # its mode in task sandboxes (set_mode)
    _fetcher: _Fetches | None = field(default=None, repr=False)  # the manager it was declared on

    def contents(self) -> bytes:
        """The file's content as bytes (TaskVine's ``contents()``): a buffer's (an output
        buffer's once its task ended), a local file's, else fetched from the worker holding it."""
        if self.kind == FileKind.BUFFER:
            if self.data is None:
                raise ValueError("this output buffer has no content yet: its task has not ended")
            return self.data
        if self.kind == FileKind.LOCAL and self.path is not None and self.path.is_file():
            return self.path.read_bytes()
        if self._fetcher is None:
            raise RuntimeError(f"{self!r} was not declared on a manager: nothing to fetch it from")
        return self._fetcher.fetch_bytes(self)

    def set_mode(self, mode: int) -> None:
        """The file's mode in task sandboxes (e.g. ``0o755`` to run it)."""
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode:o} is not a file mode")
        self.mode = mode

    def _local_mode(self) -> int | None:
        """A local file's own mode, which it keeps in sandboxes as with TaskVine (an executable
        copied there runs as ``./x``); None for anything else (a directory keeps its files')."""
        if self.kind != FileKind.LOCAL or self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None  # an output not written yet
        return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None

    def __len__(self) -> int:
        if self.kind == FileKind.BUFFER:
            return len(self.data or b"")
        if self.kind == FileKind.LOCAL and self.path is not None and self.path.is_file():
            return self.path.stat().st_size
        return len(self.contents())

    def cache_name(self) -> CacheName:
        """The name workers cache it under: derived from what the file is."""
        if self.kind == FileKind.BUFFER:
            if self.data is None:
                raise ValueError("an empty declare_buffer() is an output: a task writes it (add_output)")
            return CacheName("buf-" + sha256_bytes(self.data))
        if self.kind == FileKind.LOCAL:
            assert self.path is not None
            if not self.path.exists():
                raise FileNotFoundError(f"input file {self.path} does not exist")
            if self.path.is_dir():  # named by what it holds (file hashes memoised as above)
                return CacheName("dir-" + filetree.tree_hash(self.path, hash_path))
            return CacheName("file-" + hash_path(self.path))
        if self.kind == FileKind.URL:
            assert self.url is not None
            return self.name or CacheName("url-" + sha256_text(self.url))
        if self.kind == FileKind.UNTAR:  # named after the archive it unpacks
            assert self.archive is not None
            return CacheName("untar-" + sha256_text("untar\0" + self.archive.cache_name()))
        if self.kind == FileKind.MINITASK:  # named after the definition of the task that makes it
            return CacheName("mini-" + sha256_text(self.mini_spec().model_dump_json()))
        if self.kind == FileKind.TEMP:
            if self.name is None:
                raise ValueError(
                    "this temp file has no producer yet: submit the task that writes it (add_output) first"
                )
            return self.name
        raise NotImplementedError(f"{self.kind.value} files are not supported yet")

    def mini_spec(self) -> MiniTaskSpec:
        assert self.mini is not None and self.mini_output is not None
        t = self.mini
        return MiniTaskSpec(
            command=t.command or "",
            inputs=[f.binding(remote) for f, remote in t.inputs],
            output=self.mini_output,
            env=t.env,
            time_max=t.time_max,
        )

    def binding(self, remote_name: str) -> FileBinding:
        """How a task (or a file made from this one) refers to it, on the wire."""
        b = FileBinding(
            cache_name=self.cache_name(),
            remote_name=remote_name,
            kind=self.kind,
            cache=self.cache,
            url=self.url,
            mode=self.mode if self.mode is not None else self._local_mode(),
            peer_transfer=self.peer_transfer,
        )
        if self.archive is not None:
            b.source = self.archive.binding("archive")
        if self.mini is not None:
            b.mini = self.mini_spec()
        return b

    def uploads(self) -> list[File]:
        """The client's own files this one needs (itself, or what it is made from)."""
        if self.kind in (FileKind.LOCAL, FileKind.BUFFER):
            return [self]
        if self.archive is not None:
            return self.archive.uploads()
        if self.mini is not None:
            return [u for f, _ in self.mini.inputs for u in f.uploads()]
        return []

    def content(self) -> bytes:
        """What to upload: a buffer's bytes, a local file's, or a local directory as a tar."""
        if self.kind == FileKind.BUFFER:
            return self.data or b""
        assert self.path is not None
        return filetree.pack(self.path) if self.path.is_dir() else self.path.read_bytes()

    def upload(self) -> Upload:
        """How to send this file: its bytes when small, else where to read its pieces from
        (a large file where it lies; a directory packed once into a temporary tar)."""
        name = self.cache_name()
        if self.kind == FileKind.BUFFER or self.path is None:
            data = self.content()
            return Upload(name, data=data, size=len(data))
        if self.path.is_dir():
            import tempfile

            fd, tmp = tempfile.mkstemp(prefix="kubevine-upload-", suffix=".tar")
            os.close(fd)
            filetree.pack_to(self.path, Path(tmp))
            return Upload(name, path=Path(tmp), size=Path(tmp).stat().st_size, temporary=True)
        size = self.path.stat().st_size
        if size <= MAX_PIECE:
            return Upload(name, data=self.path.read_bytes(), size=size)
        return Upload(name, path=self.path, size=size)

    def source(self) -> str:
        if self.archive is not None:
            return f"untar of {self.archive.source()}"
        if self.mini is not None:
            return f"output {self.mini_output} of {self.mini.command!r}"
        if self.path is not None:
            return str(self.path)
        if self.url is not None:
            return self.url
        return f"buffer of {len(self.data or b'')} bytes"

    def __repr__(self) -> str:
        return f"File({self.kind.value}, {self.source()})"


class _Fetches(Protocol):
    """The manager a task was submitted to, as far as a task needs it."""

    def fetch_bytes(self, file: File) -> bytes: ...


class Task:
    """A command to run on a worker (TaskVine's ``Task``)."""

    _kind = TaskKind.COMMAND
    library: str | None = None  # FunctionCall: the library and function it calls
    function: str | None = None

    def __init__(
        self,
        command: str | None = None,
        *,
        cores: float | None = None,
        memory: int | None = None,
        disk: int | None = None,
        gpus: int | None = None,
        retries: int = 0,
        priority: float = 0.0,
        tag: str | None = None,
        category: str | None = None,
        env: dict[str, str] | None = None,
        time_max: float | None = None,
        inputs: dict[File, str | dict[str, Any]] | None = None,
        outputs: dict[File, str | dict[str, Any]] | None = None,
        **task_info: Any,
    ) -> None:
        """A command (TaskVine's ``Task(command, **task_info)``): ``inputs`` and ``outputs``
        map declared files to their names in the sandbox (or to ``add_input``/``add_output``
        keywords with ``remote_name``); any other ``key=value`` calls ``set_<key>(value)``."""
        if isinstance(command, dict):
            raise TypeError(f"{command!r} is not a command: did you mean Task(**{command!r})?")
        self.command = command
        self._cores = cores
        self._memory = memory
        self._disk = disk
        self._gpus = gpus
        self.retries = retries
        self.priority = priority
        self.tag = tag
        self.category = category
        self.env: dict[str, str] = dict(env or {})
        self.time_max = time_max
        self.inputs: list[tuple[File, str]] = []
        self.outputs: list[tuple[File, str]] = []
        # filled in on submit / on completion
        self.id: TaskId | None = None
        self.state = ClientState.NEW
        self._exit_code: int | None = None
        self.outcome: Outcome | None = None  # kubevine's reason the last attempt ended
        self.error: str | None = None
        self.attempts = 0
        self.wall_time = 0.0
        self.worker: str | None = None
        self._output: bytes | None = None
        self._value: bytes | None = None  # a temp output value, once fetched
        self._manager: _Fetches | None = None  # set on submit
        self._attached = False  # rebuilt from the manager by Manager(attach=True)
        self._future: concurrent.futures.Future[Task] | None = None
        self._mounts: dict[tuple[int, str], tuple[bool, bool]] = {}  # (file, name) -> strict, symlink
        self._watched: set[str] = set()  # outputs streamed back while running
        self.environments: list[File] = []  # packed environments it runs in (add_environment)
        self._measured: Any = None  # the worker's measurement of the last attempt
        self.time_end: float | None = None  # epoch seconds
        self.time_start: float | None = None
        self.max_forsaken: int | None = None
        self.features: list[str] = []
        self.hostname: str | None = None  # where the last attempt ran (TaskVine's names)
        self.addrport: str | None = None
        for mapping, add in ((inputs, self.add_input), (outputs, self.add_output)):
            for f, how in (mapping or {}).items():
                if not isinstance(f, File):
                    raise TypeError(f"{f!r} is not a declared file (m.declare_*)")
                if isinstance(how, str):
                    add(f, how)
                elif isinstance(how, dict):
                    add(f, **how)
                else:
                    raise TypeError(f"{how!r}: give a remote name or a dict of add_input/add_output keywords")
        for key, value in task_info.items():
            setter = getattr(self, f"set_{key}", None)
            if setter is None:
                raise TypeError(f"Task() got an unexpected keyword {key!r} (no set_{key})")
            setter(value)

    # -- TaskVine setters --------------------------------------------------------
    def set_cores(self, n: float) -> None:
        self._cores = n

    def set_memory(self, mb: int) -> None:
        self._memory = mb

    def set_disk(self, mb: int) -> None:
        self._disk = mb

    def set_gpus(self, n: int) -> None:
        self._gpus = n

    def set_retries(self, n: int) -> None:
        self.retries = n

    def set_priority(self, p: float) -> None:
        self.priority = p

    def set_tag(self, tag: str) -> None:
        self.tag = tag

    def set_category(self, name: str) -> None:
        self.category = name

    def set_env_var(self, name: str, value: str) -> None:
        self.env[name] = value

    def set_time_max(self, seconds: float) -> None:
        self.time_max = seconds

    def set_time_end(self, microseconds: float) -> None:
        """TaskVine's absolute deadline, in microseconds since the epoch: a task still running
        (or not yet started) then is ended with result "max end time"."""
        self.time_end = float(microseconds) / 1e6

    def set_time_start(self, microseconds: float) -> None:
        """Not dispatched before this time (microseconds since the epoch)."""
        self.time_start = float(microseconds) / 1e6

    def set_time_min(self, seconds: float) -> None:
        """TaskVine's hint for workers with a wall-time limit: kubevine's workers have none."""

    def set_max_forsaken(self, n: int) -> None:
        """How often the task may come back without running (its worker lost) before it ends
        with result "forsaken" (below 0: no limit)."""
        self.max_forsaken = None if n < 0 else n

    def set_scheduler(self, scheduler: str | int) -> None:
        """TaskVine's per-task worker choice: kubevine places each task where most of its input
        bytes are, which is TaskVine's "files"; accepted, whatever the name."""

    def add_feature(self, name: str) -> None:
        """Run only on workers started with ``--feature name``."""
        self.features.append(name)

    def set_features(self, names: str | list[str]) -> None:
        for n in [names] if isinstance(names, str) else names:
            self.add_feature(n)

    def set_monitor_output(self, directory: str) -> None:
        """TaskVine's resource-monitor reports: kubevine measures every task (t.resources_measured)."""

    def set_command(self, command: str) -> None:
        self.command = command

    def add_input(
        self, file: File, remote_name: str, strict_input: bool = False, mount_symlink: bool = False
    ) -> None:
        """``file`` appears as ``remote_name`` in the sandbox: hard-linked from the worker's
        cache (``mount_symlink=True``: a symbolic link into it); ``strict_input=True`` runs the
        task only on a worker that already holds the file (TaskVine's fixed location)."""
        _check_remote_name(remote_name)
        self.inputs.append((file, remote_name))
        if strict_input or mount_symlink:
            self._mounts[(id(file), remote_name)] = (strict_input, mount_symlink)

    def add_output(
        self,
        file: File,
        remote_name: str,
        watch: bool = False,
        failure_only: bool | None = None,
        success_only: bool | None = None,
    ) -> None:
        """What the task leaves at ``remote_name`` goes to ``file``: a local file (written
        here), a temp (kept on the worker for other tasks) or an empty ``declare_buffer()``
        (read with ``f.contents()``). ``watch=True`` brings a local file back while the task
        runs, as it grows."""
        _check_remote_name(remote_name)
        if file.kind not in (FileKind.LOCAL, FileKind.TEMP) and not (
            file.kind == FileKind.BUFFER and file.data is None
        ):
            raise ValueError(
                "outputs go to a declared local file (m.declare_file), a temp (m.declare_temp) "
                "or an empty buffer (m.declare_buffer())"
            )
        if failure_only or success_only:
            raise NotImplementedError("failure_only/success_only outputs: every output is returned")
        self.outputs.append((file, remote_name))
        if watch:
            self._watched.add(remote_name)

    def add_environment(self, env: File) -> None:
        """Run the task inside a packed environment (``m.declare_poncho``): its ``bin/run_in_env``
        wraps the command if it has one, else its ``bin`` comes first on PATH. Several nest in
        the order added."""
        if env.kind != FileKind.UNTAR:
            raise ValueError("an environment is declared with m.declare_poncho(tarball)")
        self.environments.append(env)

    add_poncho_package = add_environment
    add_execution_context = add_environment

    def add_starch_package(self, env: File) -> None:
        raise NotImplementedError("starch packages: kubevine runs packed environments (m.declare_poncho)")

    def set_snapshot_file(self, path: str) -> None:
        """TaskVine's resource-monitor snapshots: not kept by kubevine."""

    def set_library_required(self, name: str) -> None:
        """TaskVine's plumbing for FunctionCall: kubevine's calls name their library."""
        self.library = name

    @property
    def resources_measured(self) -> Any:
        """What the last attempt used (``.memory`` MB peak, ``.cores`` average, ``.wall_time``
        and ``.cpu_time`` in microseconds, ``.disk`` MB), when the worker measured it."""
        return self._measured

    @property
    def resources_requested(self) -> Resources:
        return self.resources

    resources_allocated = resources_requested

    @property
    def limits_exceeded(self) -> None:
        """kubevine enforces time limits (result "max wall time"); other limits are not
        enforced per task (see docs/security.md)."""
        return None

    def get_metric(self, name: str) -> float:
        """TaskVine's per-task metrics kubevine has: ``time_workers_execute_last`` (µs)."""
        if name in ("time_workers_execute_last", "time_workers_execute_all"):
            return self.wall_time * 1e6
        raise ValueError(f"metric {name!r}: kubevine keeps wall_time, attempts and worker per task")

    def clone(self) -> Task:
        """A copy that can be submitted on its own (same command, files and settings)."""
        import copy

        c = copy.copy(self)
        c.inputs, c.outputs, c.env, c.features = (
            list(self.inputs),
            list(self.outputs),
            dict(self.env),
            list(self.features),
        )
        c.environments = list(self.environments)
        c.id, c.state, c.outcome, c._exit_code, c._output, c._future = (
            None,
            ClientState.NEW,
            None,
            None,
            None,
            None,
        )
        return c

    def submit_finalize(self) -> None:
        """Called by ``m.submit`` before the task is sent (TaskVine's hook for subclasses)."""

    # -- results -----------------------------------------------------------------
    @property
    def resources(self) -> Resources:
        return Resources(
            cores=1 if self._cores is None else self._cores,
            memory=self._memory or 0,
            disk=self._disk or 0,
            gpus=self._gpus or 0,
        )

    @property
    def output(self) -> Any:
        """Standard output (stdout and stderr together) of the command, as text."""
        return self.std_output

    @property
    def std_output(self) -> str | None:
        """What the command wrote to stdout and stderr, as text (TaskVine's ``std_output``);
        None if it never ran."""
        if self._output is None:
            return None
        return self._output.decode(errors="replace")

    @property
    def result(self) -> Result | None:
        """Why the task ended, in TaskVine's words ("success" for any command that ran to its
        end, "input missing", "max wall time", ...); ``t.outcome`` is kubevine's finer reason."""
        return result_of(self.outcome)

    @property
    def exit_code(self) -> int | None:
        """The command's exit code; a signal's number when a signal ended it (9 for a time
        limit); -1 when it never ran; None until it ends (TaskVine's meanings)."""
        if self.outcome == Outcome.EXCEPTION:
            return 1  # the function raised (TaskVine's wrapper exits 1)
        if self._exit_code is not None:
            return -self._exit_code if self._exit_code < 0 else self._exit_code
        if self.outcome is None:
            return None
        if self.outcome == Outcome.SUCCESS:
            return 0
        if self.outcome in (Outcome.MAX_WALL_TIME, Outcome.MAX_END_TIME):
            return 9
        return -1

    @exit_code.setter
    def exit_code(self, code: int | None) -> None:
        self._exit_code = code

    def completed(self) -> bool:
        """It ran to its end, whatever its exit code (TaskVine: result "success")."""
        return ran(self.outcome)

    def successful(self) -> bool:
        """It ran, exited 0, and its outputs are present."""
        return self.outcome == Outcome.SUCCESS

    @property
    def future(self) -> concurrent.futures.Future[Task]:
        """A future that resolves to this task when it ends (any outcome)."""
        if self._future is None:
            self._future = concurrent.futures.Future()
            if self.state in (ClientState.DONE, ClientState.FAILED, ClientState.CANCELLED):
                self._future.set_result(self)
        return self._future

    def spec(self, inputs: list[FileBinding], outputs: list[FileBinding]) -> TaskSpec:
        assert self.id is not None
        return TaskSpec(
            id=self.id,
            kind=self._kind,
            command=self.command,
            library=self.library,
            function=self.function,
            resources=self.resources,
            env=self.env,
            inputs=inputs,
            outputs=outputs,
            retries=self.retries,
            priority=self.priority,
            tag=self.tag,
            category=self.category,
            time_max=self.time_max,
            time_end=self.time_end,
            time_start=self.time_start,
            max_forsaken=self.max_forsaken,
            features=self.features,
            environments=[env_name(i) for i in range(len(self.environments))],
        )

    def payload(self) -> bytes | None:
        """Binary data the task carries (pickled function and arguments); none for commands."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state} {self.command!r}>"


def _check_remote_name(name: str) -> None:
    check_remote_name(name)  # what the manager and workers accept, said here before sending
    if name.startswith(".kubevine"):
        raise ValueError(f"remote name {name!r} is reserved")


#: how long workers keep a file: a level's name, or TaskVine's booleans
Cache = str | bool | CacheLevel | None


def cache_level(cache: Cache) -> CacheLevel:
    """A cache level from TaskVine's forms: ``True`` is "workflow", ``False``/``None`` "task",
    else the level's name ("task", "workflow", "worker", "forever")."""
    if cache is True:
        return CacheLevel.WORKFLOW
    if cache is False or cache is None:
        return CacheLevel.TASK
    try:
        return CacheLevel(cache)
    except ValueError:
        raise ValueError(f"{cache!r} is not a valid cache level (task, workflow, worker, forever)") from None


def declare_local(path: str | os.PathLike[str], cache: Cache) -> File:
    return File(FileKind.LOCAL, cache_level(cache), path=Path(path).absolute())


URL_HEAD_TIMEOUT = 10.0  # seconds the client waits for a URL's validators at declare time


def declare_url(url: str, cache: Cache) -> File:
    """A URL, named after the URL and its validators as they are now (see :func:`url_validators`).

    With no validator to be had, the name is unique to this declaration: the content is
    fetched again rather than risk serving an old copy.
    """
    if not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"unsupported URL {url!r}: http, https and file URLs are fetched by workers")
    validators = url_validators(url)
    if not validators:
        log.warning("no validators for %s (ETag, Last-Modified, Content-Length): it will not be reused", url)
        validators = f"unvalidated {uuid.uuid4().hex}"
    digest = sha256_text(f"{url}\0{validators}")
    return File(FileKind.URL, cache_level(cache), url=url, name=CacheName("url-" + digest))


XROOTD_STAT_TIMEOUT = 10.0  # seconds the client waits for an XRootD server's stat at declare time


def declare_xrootd(url: str, cache: Cache) -> File:
    """An XRootD file (``root://server[:port]//path``), fetched by the worker with ``xrdcp``
    once per node cache. Named after the URL and its size and modification time as the
    server says now (``xrdfs stat``, when the client has XRootD's tools); else after the URL
    alone: data files served by XRootD (CMS datasets) do not change under one name."""
    if not url.startswith(("root://", "roots://", "xroot://")):
        raise ValueError(f"{url!r} is not an XRootD URL (root://server//path)")
    validators = xrootd_validators(url)
    digest = sha256_text(f"{url}\0{validators}")
    return File(FileKind.URL, cache_level(cache), url=url, name=CacheName("url-" + digest))


#: XRootD's retry and timeout knobs for every xrdcp a worker runs (its own fetches and fetch
#: minitasks): one try and 30 s, so a server that is down fails a fetch in seconds, not
#: minutes (XRootD's defaults retry for minutes); the worker's own settings win.
XRD_KNOBS = {"XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "30", "XRD_REQUESTTIMEOUT": "30",
             "XRD_STREAMTIMEOUT": "30"}  # fmt: skip
XRDCP_MISSING = (
    "xrdcp (XRootD's client) is not installed on this worker nor in the fetch's environment: "
    "install xrootd-client, or pass declare_xrootd an env= that has it"
)


def declare_xrootd_fetch(url: str, proxy: File | None, env: File | None, cache: Cache) -> File:
    """An XRootD file fetched with a credential or a client of its own, as TaskVine does it: a
    minitask that runs ``xrdcp`` on the worker, with ``proxy`` (an X509 proxy, staged like any
    input and copied to a private 0600 file, as XRootD's GSI demands) in ``$X509_USER_PROXY``
    and ``env`` (a packed environment, ``declare_poncho``) first on ``PATH``. Made once per
    node cache, named after the URL, the server's validators and the proxy's and environment's
    names: a renewed proxy is a new file, and the fetch runs again with it."""
    plain = declare_xrootd(url, cache)  # checks the URL; its name carries the validators
    for what, f in (("proxy", proxy), ("env", env)):
        if f is not None and not isinstance(f, File):
            raise TypeError(f"declare_xrootd: {what} must be a declared file (m.declare_file, ...)")
    if env is not None and env.kind != FileKind.UNTAR:
        raise ValueError("declare_xrootd: env is a packed environment, declared with m.declare_poncho")
    script = ["set -e"]
    script += [f'export {k}="${{{k}:-{v}}}"' for k, v in XRD_KNOBS.items()]
    run = ""
    if env is not None:
        script.append('export PATH="$PWD/env/bin:$PATH"')
        script.append("if [ -x env/bin/run_in_env ]; then run=./env/bin/run_in_env; else run=; fi")
        run = "$run "
    if proxy is not None:
        script.append("cp x509up .x509up && chmod 600 .x509up")
        script.append('export X509_USER_PROXY="$PWD/.x509up"')
    script.append(f"command -v xrdcp >/dev/null 2>&1 || {{ echo {shlex.quote(XRDCP_MISSING)}; exit 127; }}")
    script.append(f"{run}xrdcp --nopbar --force {shlex.quote(url)} output")
    fetch = Task("\n".join(script))
    fetch.set_env_var("KUBEVINE_XROOTD_SOURCE", plain.cache_name())  # the server's version of it
    if proxy is not None:
        fetch.add_input(proxy, "x509up")
    if env is not None:
        fetch.add_input(env, "env")
    return declare_minitask(fetch, "output", cache)


def xrootd_validators(url: str) -> str:
    import shutil
    import subprocess

    xrdfs = shutil.which("xrdfs")
    parsed = urllib.parse.urlparse(url)
    if xrdfs is None or not parsed.netloc:
        return ""
    path = parsed.path[1:] if parsed.path.startswith("//") else parsed.path
    # One connection attempt (XRootD retries for minutes by default): a server that is down
    # costs the declare a moment, not the whole timeout. The caller's own XRD_* settings win.
    env = {"XRD_CONNECTIONRETRY": "1", "XRD_REQUESTTIMEOUT": "10", **os.environ}
    try:
        out = subprocess.run(
            [xrdfs, parsed.netloc, "stat", path],
            capture_output=True,
            text=True,
            timeout=XROOTD_STAT_TIMEOUT,
            check=True,
            env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("xrdfs stat %s failed: %s", url, e)
        return ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"size={fields.get('Size', '').strip()} mtime={fields.get('MTime', '').strip()}"


def url_validators(url: str) -> str:
    """What tells this version of a URL's content from another: ETag, Last-Modified and
    Content-Length from a HEAD request (a file's size and modification time for ``file://``);
    "" when there are none. The HEAD fetches no content."""
    if url.startswith("file://"):
        try:
            st = Path(urllib.parse.urlparse(url).path).stat()
        except OSError:
            return ""  # not visible from here (it may be on the workers' side)
        return f"size={st.st_size} mtime={st.st_mtime_ns}"
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=URL_HEAD_TIMEOUT) as r:
            h = r.headers
    except (OSError, ValueError) as e:  # unreachable from here, or HEAD refused
        log.debug("HEAD %s failed: %s", url, e)
        return ""
    if not (h.get("ETag") or h.get("Last-Modified")):
        return ""  # a length alone does not tell two versions apart
    return " ".join(f"{k}={h[k]}" for k in ("ETag", "Last-Modified", "Content-Length") if h.get(k))


def declare_temp() -> File:
    return File(FileKind.TEMP, CacheLevel.WORKFLOW)


def temp_name(spec_json: str, remote_name: str) -> CacheName:
    """A temp file's cache name, derived from the definition of the task that produces it."""
    return CacheName("temp-" + sha256_text(f"{spec_json}\0{remote_name}"))


def declare_buffer(data: bytes | str, cache: Cache) -> File:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return File(FileKind.BUFFER, cache_level(cache), data=raw)


def declare_untar(archive: File, cache: Cache) -> File:
    if not isinstance(archive, File):
        raise TypeError(
            "declare_untar takes a declared file (m.declare_file, declare_url, declare_temp, ...)"
        )
    if archive.kind == FileKind.LOCAL and archive.path is not None and archive.path.is_dir():
        raise ValueError(f"{archive.path} is a directory, not an archive: declare it with m.declare_file")
    return File(FileKind.UNTAR, cache_level(cache), archive=archive)


def declare_minitask(task: Task, path: str, cache: Cache) -> File:
    if type(task) is not Task or task.command is None:
        raise TypeError("declare_minitask takes a command Task (Task('...')), not a PythonTask or call")
    if task.id is not None:
        raise ValueError(f"task {task.id} was submitted: a minitask is run by workers, never submitted")
    if task.outputs:
        raise ValueError("a minitask's product is its `path`; it declares no outputs of its own")
    _check_remote_name(path)
    return File(FileKind.MINITASK, cache_level(cache), mini=task, mini_output=path)


def env_name(i: int) -> str:
    """Where a task's ``i``-th environment is unpacked in its sandbox (a reserved name)."""
    return f".kubevine-env-{i}"
