"""Files, as a workflow's user declares and fetches them (TaskVine's ``declare_*`` verbs).

Part of :class:`kubevine.client.Manager` (a base class of it), kept apart so the client's
connection and task handling read on their own. A file is declared here and then attached to
tasks (``t.add_input``/``t.add_output``); what it is decides its cache name, so the same data
is never fetched twice into one cache (see docs/dataplane.md).
"""

from __future__ import annotations

import queue
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from kubevine import filetree
from kubevine.clientio import Pull, write_atomic
from kubevine.ids import CacheName
from kubevine.protocol import FetchedFile, FileKind, _Msg
from kubevine.task import (
    Cache,
    File,
    Task,
    cache_level,
    declare_buffer,
    declare_local,
    declare_minitask,
    declare_temp,
    declare_untar,
    declare_url,
    declare_xrootd,
    declare_xrootd_fetch,
)

if TYPE_CHECKING:
    from kubevine.clientio import Connection, Shared


class FileAPI:
    """The file verbs of a Manager (it provides ``_st``, ``_conn`` and the two helpers)."""

    _st: Shared
    _conn: Connection

    def _check_open(self) -> None:
        raise NotImplementedError

    def _send_control(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        raise NotImplementedError

    def declare_file(
        self,
        path: str | Path,
        cache: Cache = "workflow",
        peer_transfer: bool = True,
        unlink_when_done: bool = False,
    ) -> File:
        """A local file or directory (input: sent to workers once; output: written back here).
        ``cache``: "task", "workflow" (kubevine's default), "worker", "forever", or TaskVine's
        True ("workflow") / False ("task"). ``peer_transfer=False``: workers never fetch it
        from each other. ``unlink_when_done=True``: the local file is deleted when it is
        undeclared (``m.undeclare_file``/``m.remove_file``) and no unfinished task uses it."""
        f = self._declared(declare_local(path, cache), peer_transfer)
        f.unlink_when_done = unlink_when_done
        return f

    def declare_buffer(
        self, buffer: bytes | str | None = None, cache: Cache = "workflow", peer_transfer: bool = True
    ) -> File:
        """Bytes in memory (a str is UTF-8), made available to tasks as a file. With no bytes,
        an output: a task writes it (``add_output``) and ``f.contents()`` reads it after."""
        if buffer is None:
            return self._declared(File(FileKind.BUFFER, cache_level(cache)), peer_transfer)
        return self._declared(declare_buffer(buffer, cache), peer_transfer)

    def declare_url(self, url: str, cache: Cache = "workflow", peer_transfer: bool = True) -> File:
        """A file at a URL (http, https, file): fetched by a worker, never by the manager,
        once per node; other workers of the workflow get it from their peers."""
        if not isinstance(url, str):
            raise TypeError(f"a URL is a str, not {type(url).__name__}")
        return self._declared(declare_url(url, cache), peer_transfer)

    def declare_temp(self) -> File:
        """An intermediate file: written by one task (``add_output``), read by others
        (``add_input``). It stays on the worker that made it and moves peer to peer; if that
        worker is lost before it is used, the task that made it runs again."""
        return self._declared(declare_temp(), True)

    def declare_untar(self, tarball: File, cache: Cache = "workflow", peer_transfer: bool = True) -> File:
        """A directory: the tar archive ``tarball`` (any declared file; gzip, bzip2 and xz are
        recognised) unpacked by the worker, once per node cache, and kept unpacked there."""
        return self._declared(declare_untar(tarball, cache), peer_transfer)

    def declare_minitask(
        self, minitask: Task, source: str, cache: Cache = "workflow", peer_transfer: bool = True
    ) -> File:
        """A file (or directory) made on the worker by running the command ``minitask`` (with
        its inputs) and taking what it leaves at ``source`` in its sandbox; made once per node
        cache and named after the task's definition. ``minitask`` is never submitted itself."""
        return self._declared(declare_minitask(minitask, source, cache), peer_transfer)

    def declare_poncho(
        self, package: str | Path | File, cache: Cache = "workflow", peer_transfer: bool = True
    ) -> File:
        """A packed environment (a conda-pack or poncho tarball, a local path or a declared
        file), unpacked once per node cache; tasks and libraries run in it with
        ``add_environment`` (its ``bin/run_in_env`` wraps the command, else its ``bin`` leads
        PATH)."""
        tarball = package if isinstance(package, File) else self.declare_file(package, cache=True)
        return self._declared(declare_untar(tarball, cache), peer_transfer)

    def declare_xrootd(
        self,
        source: str,
        proxy: File | None = None,
        env: File | None = None,
        cache: Cache = "workflow",
        peer_transfer: bool = True,
    ) -> File:
        """A file from an XRootD server (``root://server//path``), fetched by a worker with
        ``xrdcp`` (XRootD's client on the worker) once per node cache and shared peer to peer.
        With ``proxy`` (an X509 proxy, a declared file) or ``env`` (a packed environment that
        provides ``xrdcp``, ``m.declare_poncho``) the fetch is a minitask, as in TaskVine: it
        presents the proxy in ``$X509_USER_PROXY`` and runs the environment's ``xrdcp``; each
        node fetches its own copy from the server. Without a proxy, ``xrdcp`` presents the
        worker's own (``$X509_USER_PROXY``, else ``/tmp/x509up_u<uid>``)."""
        if proxy is None and env is None:
            return self._declared(declare_xrootd(source, cache), peer_transfer)
        return self._declared(declare_xrootd_fetch(source, proxy, env, cache), peer_transfer)

    def declare_chirp(self, *args: Any, **kwargs: Any) -> File:
        """TaskVine's files from a Chirp server: no Chirp client is part of kubevine."""
        raise NotImplementedError(
            "declare_chirp: kubevine has no Chirp client; declare_url or declare_xrootd"
        )

    def declare_starch(self, *args: Any, **kwargs: Any) -> File:
        """TaskVine's self-extracting starch environments: use declare_poncho (a packed env)."""
        raise NotImplementedError("declare_starch: kubevine runs packed environments (declare_poncho)")

    def _pull(self, name: CacheName, file: File, timeout: float) -> Pull:
        """``name`` from the manager in pieces into a temporary file (FileNotFoundError when no
        copy is left, TimeoutError after ``timeout`` seconds without the whole file)."""
        answers: queue.SimpleQueue[tuple[FetchedFile, bytes | None]] = queue.SimpleQueue()
        pull = Pull(name, Path(self._conn.spool) / f"{name}.{uuid.uuid4().hex[:8]}")
        deadline = time.monotonic() + timeout
        asked: set[int] = set()
        try:
            while not pull.finished:
                for offset, length in pull.puller.requests(time.monotonic()):
                    asked.add(self._conn.ask_piece(name, offset, length, lambda r, d: answers.put((r, d))))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fetching {file!r} took longer than {timeout}s")
                try:
                    pull.take(*answers.get(timeout=min(left, 1.0)))
                except queue.Empty:
                    self._check_open()
        except BaseException:
            pull.discard()
            raise
        finally:
            with self._st.lock:
                for request in asked:
                    self._st.fetches.pop(request, None)
        if pull.error is not None:
            pull.discard()
            raise FileNotFoundError(f"cannot fetch {file!r}: {pull.error}")
        return pull

    def _declared(self, f: File, peer_transfer: bool) -> File:
        f.peer_transfer = peer_transfer
        f._fetcher = self
        return f

    @overload
    def fetch_file(self, file: File, path: None = None, *, timeout: float = 120.0) -> str: ...

    @overload
    def fetch_file(self, file: File, path: str | Path, *, timeout: float = 120.0) -> Path: ...

    def fetch_file(self, file: File, path: str | Path | None = None, *, timeout: float = 120.0) -> str | Path:
        """A declared file's content as text, as TaskVine returns it (bytes that are not UTF-8
        survive as surrogates: ``text.encode("utf-8", "surrogateescape")`` gives them back);
        ``m.fetch_bytes(f)`` returns the bytes, ``path=`` writes the file (or directory)."""
        if path is not None:
            return self.fetch_bytes(file, path, timeout=timeout)
        return self.fetch_bytes(file, timeout=timeout).decode("utf-8", "surrogateescape")

    @overload
    def fetch_bytes(self, file: File, path: None = None, *, timeout: float = 120.0) -> bytes: ...

    @overload
    def fetch_bytes(self, file: File, path: str | Path, *, timeout: float = 120.0) -> Path: ...

    def fetch_bytes(
        self, file: File, path: str | Path | None = None, *, timeout: float = 120.0
    ) -> bytes | Path:
        """A declared file's content, from wherever it is.

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
                write_atomic(dest, filetree.pack(file.path), directory=True)
                return dest
            data: bytes = file.path.read_bytes()
            directory = False
        elif file.kind == FileKind.BUFFER:
            data, directory = file.data or b"", False
        else:
            name = file.cache_name()  # ValueError for a temp whose producer was never submitted
            pull = self._pull(name, file, timeout)
            try:
                if dest is not None:
                    _place(pull, dest)
                    return dest
                if pull.directory:
                    raise IsADirectoryError(f"{file!r} is a directory: pass path= to write it somewhere")
                return pull.sink_path().read_bytes()
            finally:
                pull.discard()
        if dest is not None:
            write_atomic(dest, data, directory)
            return dest
        if directory:
            raise IsADirectoryError(f"{file!r} is a directory: pass path= to write it somewhere")
        return data

    def undeclare_file(self, file: File) -> None:
        """The workflow no longer needs this file (TaskVine's call): workers delete their
        copies and, for a temp, the manager forgets the task that wrote it, which is not run
        again to remake it. A file an unfinished task still reads or writes goes once that
        task is done. Using the file again later sends or makes it anew. A local file declared
        with ``unlink_when_done=True`` is deleted here once no unfinished task uses it."""
        if file.unlink_when_done and file.path is not None and not self._in_use(file):
            file.path.unlink(missing_ok=True)
        if file.kind == FileKind.TEMP and file.name is None:
            return  # never made: nothing to forget
        if file.kind == FileKind.BUFFER and file.data is None:
            return  # an output buffer never written
        try:
            name = file.cache_name()
        except FileNotFoundError:
            return  # a local file gone from disk was never sent under its current name
        with self._st.lock:
            self._st.out.undeclare(name)
        self._conn.wake()

    def remove_file(self, file: File) -> None:
        """TaskVine's older name for :meth:`undeclare_file`."""
        self.undeclare_file(file)

    def _in_use(self, file: File) -> bool:
        with self._st.lock:
            tasks = list(self._st.tasks.values())
        return any(f is file for t in tasks for f, _ in (*t.inputs, *t.outputs))


def _place(pull: Pull, dest: Path) -> None:
    """The fetched file (or directory, from its tar) at ``dest``, replacing what is there."""
    src = pull.sink_path()
    if pull.directory:
        tmp = dest.with_name(f".{dest.name}.kubevine-tmp-{uuid.uuid4().hex[:8]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        filetree.unpack(src, tmp)
        filetree.place(tmp, dest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        filetree.place(src, dest)
