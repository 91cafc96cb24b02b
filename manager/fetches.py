"""Files a client fetches through the manager (``m.fetch_file``), a piece at a time.

A client asks for a piece (``FetchFile.offset``/``length``) and gets it back with the file's
size (``FetchedFile.offset``/``total``), so no message is ever larger than a piece and the
client writes the file to disk as it comes. A file the client sent is read from the manager's
file store. A file only workers hold (a temp, a spilled result, a URL's content) is first
pulled from one of them into a spool file (:mod:`kubevine.manager.peerfetch`, off the loop);
the requests that arrive meanwhile wait for it, and every piece of it is then served from the
same spool — a directory's pieces all come from one tar — until the spool has gone unread
for :data:`SPOOL_TTL` seconds and is deleted.

The old whole-file form (``length`` None) is still answered, for files up to
:data:`MAX_WHOLE` bytes, until every client asks in pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubevine.ids import CacheName, ClientId, WorkerId
from kubevine.manager import dataplane
from kubevine.manager.filestore import FileStore
from kubevine.manager.peerfetch import PeerFetcher
from kubevine.protocol import MAX_MESSAGE, FetchedFile, FetchFile, FileData, FileRequest, _Msg

if TYPE_CHECKING:
    from kubevine.manager.core import Core

SPOOL_TTL = 120.0  # seconds a spooled file is kept after its last piece was read
MAX_WHOLE = MAX_MESSAGE - (1 << 20)  # bytes: the largest file sent whole (the old form)

Send = Callable[[bytes, _Msg, list[bytes]], bool]
#: (name, "manager" | "peer", the worker it came from, client, bytes, seconds): a TRANSFER line
LogFetch = Callable[[CacheName, str, str | None, str, int, float], None]


@dataclass(slots=True)
class Ask:
    ident: bytes
    client: ClientId
    msg: FetchFile


@dataclass
class Spool:
    """A worker's file pulled (or being pulled) for clients."""

    used: float
    waiting: list[Ask] = field(default_factory=list)
    path: Path | None = None  # None while the pull is under way
    directory: bool = False
    size: int = 0
    source: WorkerId | None = None
    seconds: float = 0.0


def is_dir(name: CacheName) -> bool:
    """Whether a file a client sent is a directory (its name says so; it is stored as a tar)."""
    return name.startswith("dir-")


class Fetches:
    """Client fetches under way, and the spool of files pulled from workers for them."""

    def __init__(
        self,
        store: FileStore,
        fetcher: PeerFetcher,
        send: Send,
        log_fetch: LogFetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.send = send
        self.log_fetch = log_fetch
        self.clock = clock
        self.spools: dict[CacheName, Spool] = {}

    def ask(self, core: Core, ident: bytes, client: ClientId, msg: FetchFile) -> None:
        """Answer a client's request, now if the file is at hand, else once it is pulled."""
        name = msg.cache_name
        size = self.store.size(name)
        if size is not None:
            self._answer(
                Ask(ident, client, msg), self.store.path(name), is_dir(name), size, "manager", None, 0.0
            )
            return
        sp = self.spools.get(name)
        if sp is not None:
            sp.used = self.clock()
            if sp.path is None:
                sp.waiting.append(Ask(ident, client, msg))
            else:
                self._answer(Ask(ident, client, msg), sp.path, sp.directory, sp.size, "peer", sp.source, 0.0)
            return
        sources, why = dataplane.fetch_sources(core, name)
        if not sources:
            self.send(ident, FetchedFile(request=msg.request, cache_name=name, error=why), [])
            return
        info = core.catalog.info.get(name)
        self.spools[name] = Spool(self.clock(), [Ask(ident, client, msg)])
        self.fetcher.submit(name, sources, info.checksum if info is not None else None)

    def pulled(self) -> None:
        """Pulls that ended: answer the requests that waited for them."""
        for f in self.fetcher.done():
            sp = self.spools.get(f.name)
            if sp is None:  # nobody waits (closed meanwhile)
                if f.path is not None:
                    f.path.unlink(missing_ok=True)
                continue
            waiting, sp.waiting = sp.waiting, []
            if f.path is None:
                del self.spools[f.name]
                for a in waiting:
                    reply = FetchedFile(request=a.msg.request, cache_name=f.name, error=f.error)
                    self.send(a.ident, reply, [])
                continue
            sp.path, sp.directory, sp.size, sp.source, sp.seconds = (
                f.path,
                f.directory,
                f.size,
                f.source,
                f.seconds,
            )
            sp.used = self.clock()
            for a in waiting:
                self._answer(a, f.path, f.directory, f.size, "peer", f.source, f.seconds)

    def _answer(
        self,
        a: Ask,
        path: Path,
        directory: bool,
        size: int,
        kind: str,
        peer: WorkerId | None,
        seconds: float,
    ) -> None:
        msg, name = a.msg, a.msg.cache_name
        reply = FetchedFile(
            request=msg.request, cache_name=name, directory=directory, source=peer or "manager"
        )
        try:
            if msg.length is None:  # the old form: the whole file
                if size > MAX_WHOLE:
                    reply.error = f"{name} is {size} bytes, too large to send whole: fetch it in pieces"
                    self.send(a.ident, reply, [])
                    return
                data = path.read_bytes()
            elif msg.offset > size:
                reply.error = f"offset {msg.offset} is past the end of {name} ({size} bytes)"
                self.send(a.ident, reply, [])
                return
            else:
                with open(path, "rb") as f:
                    f.seek(msg.offset)
                    data = f.read(msg.length)
                reply.offset, reply.total = msg.offset, size
        except OSError as e:
            reply.error = f"cannot read {name}: {e.strerror}"
            self.send(a.ident, reply, [])
            return
        reply.frame = 0
        self.send(a.ident, reply, [data])
        if msg.offset == 0:
            self.log_fetch(name, kind, peer, a.client, size, seconds)

    def expire(self) -> None:
        """Delete spools nobody has read for :data:`SPOOL_TTL` seconds."""
        now = self.clock()
        for name in [n for n, sp in self.spools.items() if sp.path is not None and now - sp.used > SPOOL_TTL]:
            sp = self.spools.pop(name)
            assert sp.path is not None
            sp.path.unlink(missing_ok=True)

    def forget(self, names: list[CacheName]) -> None:
        """The client undeclared these: their spools go too."""
        for name in names:
            sp = self.spools.get(name)
            if sp is not None and sp.path is not None:
                del self.spools[name]
                sp.path.unlink(missing_ok=True)

    def close(self) -> None:
        for sp in self.spools.values():
            if sp.path is not None:
                sp.path.unlink(missing_ok=True)
        self.spools.clear()


def serve_worker(store: FileStore, ident: bytes, msg: FileRequest, send: Send) -> None:
    """A worker's ``FileRequest``: each piece it asks for (``FileData`` with its offset and the
    file's size), or each whole file (the old form, for files up to :data:`MAX_WHOLE`); a
    file the manager does not have is answered with the reason, and the worker tries its
    next source."""
    for name in msg.cache_names:
        size = store.size(name)
        data = store.get(name) if size is not None and size <= MAX_WHOLE else None
        if data is None:
            why = f"the manager has no file {name}" if size is None else f"{name} is too large: ask in pieces"
            send(ident, FileData(cache_name=name, error=why), [])
        else:  # the worker reports the arrival (TRANSFER line, counters)
            send(ident, FileData(cache_name=name, frame=0, directory=is_dir(name)), [data])
    for p in msg.pieces:
        name = p.cache_name
        size = store.size(name)
        try:
            if size is None or p.offset > size:
                raise ValueError(f"the manager has no file {name}" if size is None else "offset past the end")
            piece = store.read(name, p.offset, p.length)
        except (OSError, ValueError) as e:
            send(ident, FileData(cache_name=name, error=str(e), offset=p.offset), [])
            continue
        reply = FileData(cache_name=name, frame=0, directory=is_dir(name), offset=p.offset, total=size)
        send(ident, reply, [piece])
