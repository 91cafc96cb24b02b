"""Bringing files into a worker's cache: from peers, from the manager, from URLs, in pieces.

To stage an input, the manager names the sources it prefers (a peer that has it, else the
manager, else the URL); :class:`Fetcher` tries them in order and moves on to the next source
when one fails, answers nothing, or sends something corrupt. A URL is downloaded on a thread
of its own: http(s) and file URLs by urllib, ``root://`` URLs by XRootD's ``xrdcp``
(:mod:`kubevine.worker.xrootd`). Before fetching, it takes the name's node-wide lock in the
shared cache: if another worker on the node is already fetching the same file, it waits for
that copy instead.

A file never sits in memory whole: it is pulled in pieces (:class:`kubevine.chunks.Puller`,
a window of requests, asked again after a silence) and each piece is written where it belongs
in a temporary file beside the cache (:class:`kubevine.chunks.Sink`). From a peer, each
request carries the workflow's transfer proof (:func:`kubevine.chunks.get_request`); from the
manager, pieces are asked with ``FileRequest(pieces=...)`` and come back as ``FileData`` with
their offset and the file's size. A manager that answers with a whole file (``total`` None, a
manager from before pieces) is understood too, and one that does not answer pieces at all
within ``MANAGER_PIECES_GRACE`` is asked for whole files from then on. Once complete, the
file's checksum is verified from disk; a directory arrives as a tar and is unpacked. Every
arrival (or failure) is recorded for the manager's transfer accounting.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tarfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from kubevine import chunks, filetree
from kubevine.auth import Credentials
from kubevine.digest import sha256_file
from kubevine.ids import CacheName
from kubevine.protocol import PieceRef, ProtocolError, StageIn, TransferRecord
from kubevine.worker import xrootd
from kubevine.worker.cache import Cache, content_checksum

log = logging.getLogger(__name__)

PEER_TIMEOUT = 30.0  # seconds a source may go without sending a piece before the next is tried
NODE_WAIT = 300.0  # seconds to wait for a file another worker of the node is bringing
MANAGER_PIECES_GRACE = 3.0  # seconds before a manager silent on pieces is asked for whole files
MAX_ACTIVE = 128  # fetches under way at once (each holds a lock file open); the rest wait their turn

AskManager = Callable[[list[PieceRef], list[CacheName]], None]


@dataclass
class Fetch:
    stage: StageIn
    mode: int | None = None  # owner bits the cache copy gets (None: 0600)
    source: int = -1  # index into stage.sources of the attempt under way
    started: float = 0.0
    deadline: float = 0.0  # no piece by then: the source failed
    sibling: bool = False  # another worker on this node is fetching it
    errors: list[str] = field(default_factory=list)
    puller: chunks.Puller | None = None
    sink: chunks.Sink | None = None
    asked_manager: float | None = None  # when pieces were first asked of the manager


class Fetcher:
    """Fetches staged inputs into the cache, one source after another until one works."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cache: Cache,
        creds: Credentials,
        ask_manager: AskManager,
        register: Callable[[object], None],
    ) -> None:
        self.ctx = ctx
        self.cache = cache
        self.creds = creds
        self.proof = creds.transfer_proof()
        self.ask_manager = ask_manager
        self.register = register
        self.fetches: dict[CacheName, Fetch] = {}  # wanted: under way, or waiting in `pending`
        self.pending: deque[Fetch] = deque()  # not started yet (at most MAX_ACTIVE run at once)
        self.active = 0
        self.peers: dict[str, zmq.Socket[bytes]] = {}
        self.arrived: list[tuple[CacheName, TransferRecord]] = []
        self.failed: list[tuple[CacheName, str]] = []
        self.records: list[TransferRecord] = []
        self.evicted: list[CacheName] = []
        self.manager_pieces: bool | None = None  # None: not known yet whether it serves pieces
        self._ask_pieces: list[PieceRef] = []  # to the manager, sent together by flush()
        self._ask_whole: list[CacheName] = []
        self._url_done: queue.SimpleQueue[tuple[CacheName, Path | None, str | None]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    # -- requests -------------------------------------------------------------------

    def want(self, stage: StageIn, mode: int | None = None) -> None:
        """Fetch this file (now, or once fewer than MAX_ACTIVE fetches are under way)."""
        name = stage.cache_name
        if name in self.fetches:
            return
        f = Fetch(stage, mode)
        self.fetches[name] = f
        self.pending.append(f)
        self.start_pending()

    def start_pending(self) -> None:
        while self.pending and self.active < MAX_ACTIVE:
            f = self.pending.popleft()
            if self.fetches.get(f.stage.cache_name) is f:
                self.active += 1
                f.started = time.perf_counter()
                self._advance(f)

    def _advance(self, f: Fetch) -> None:
        """Start the next attempt for ``f``: the file is here, a sibling has it, or a source."""
        name = f.stage.cache_name
        if self.cache.has(name) and self.cache.sound(name, f.stage.checksum):
            self._done(f, TransferRecord(cache_name=name, source="node"))
            return
        if not f.stage.sources:  # the manager says this node has it or will: wait for it
            if not f.sibling:
                f.sibling = True
                f.deadline = time.monotonic() + NODE_WAIT
            elif time.monotonic() > f.deadline:
                self._drop(f)
                self.failed.append((name, f"no copy appeared on this node in {NODE_WAIT:.0f}s"))
            return
        if not self.cache.try_lock(name):
            f.sibling = True  # another worker of this node fetches it; wait for its copy
            return
        f.sibling = False
        if self.cache.has(name):  # a copy that failed its check: fetch it anew
            self.cache.remove(name)
        self._reset(f)
        f.source += 1
        if f.source >= len(f.stage.sources):
            self.cache.unlock(name)
            self._drop(f)
            self.failed.append((name, "; ".join(f.errors) or "no source has it"))
            return
        src = f.stage.sources[f.source]
        f.started = time.perf_counter()
        f.deadline = time.monotonic() + PEER_TIMEOUT
        if src.kind == "peer" and src.address:
            f.puller = chunks.Puller()
            self._pull_from_peer(f, src.address)
        elif src.kind == "manager":
            if self.manager_pieces is False:
                self._ask_whole.append(name)
            else:
                f.puller = chunks.Puller()
                f.asked_manager = time.monotonic()
                self._pull_from_manager(f)
        elif src.kind == "url" and src.address:
            threading.Thread(target=self._download, args=(name, src.address), daemon=True).start()
        else:
            self._fail_source(f, f"source {src.kind} unusable")

    def _peer(self, address: str) -> zmq.Socket[bytes]:
        sock = self.peers.get(address)
        if sock is None:
            sock = self.peers[address] = self.creds.client(self.ctx.socket(zmq.DEALER))
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{address}")
            self.register(sock)
        return sock

    def _pull_from_peer(self, f: Fetch, address: str) -> None:
        assert f.puller is not None
        sock = self._peer(address)
        for offset, length in f.puller.requests(time.monotonic()):
            sock.send_multipart(chunks.get_request(self.proof, f.stage.cache_name, offset, length))

    def _pull_from_manager(self, f: Fetch) -> None:
        assert f.puller is not None
        for offset, length in f.puller.requests(time.monotonic()):
            self._ask_pieces.append(PieceRef(cache_name=f.stage.cache_name, offset=offset, length=length))

    def flush(self) -> None:
        """Start fetches that may start; send what was asked of the manager, in one request."""
        self.start_pending()
        if self._ask_pieces or self._ask_whole:
            pieces, whole = self._ask_pieces, list(dict.fromkeys(self._ask_whole))
            self._ask_pieces, self._ask_whole = [], []
            self.ask_manager(pieces, whole)

    def _reset(self, f: Fetch) -> None:
        if f.sink is not None:
            f.sink.discard()
        f.sink, f.puller, f.asked_manager = None, None, None

    def _fail_source(self, f: Fetch, why: str) -> None:
        src = f.stage.sources[f.source] if 0 <= f.source < len(f.stage.sources) else None
        kind = src.kind if src else "manager"
        log.warning("fetching %s from %s failed: %s", f.stage.cache_name, kind, why)
        f.errors.append(f"{kind}: {why}")
        self.records.append(
            TransferRecord(
                cache_name=f.stage.cache_name,
                source=kind,
                source_worker=src.worker if src else None,
                seconds=time.perf_counter() - f.started,
                ok=False,
                error=why,
            )
        )
        self._reset(f)
        self._advance(f)

    # -- pieces ---------------------------------------------------------------------

    def _piece(self, f: Fetch, offset: int, total: int, directory: bool, data: bytes) -> bool:
        """Write one piece; False (and the source failed) when it does not fit the file."""
        if f.puller is None:
            return True  # a late piece of an attempt given up
        try:
            f.puller.got(offset, total)
            if f.sink is None:
                tmp = self.cache.root / f".{f.stage.cache_name}.{os.getpid()}.{time.monotonic_ns()}.part"
                f.sink = chunks.Sink(tmp, total, directory)
            f.sink.write(offset, data)
        except (ValueError, OSError) as e:
            self._fail_source(f, f"bad piece at {offset}: {e}")
            return False
        f.deadline = time.monotonic() + PEER_TIMEOUT
        if f.sink.complete():
            sink, f.sink = f.sink, None
            self._complete(f, sink.tmp, sink.directory, sink.total)
        return True

    def on_peer(self, sock: zmq.Socket[bytes]) -> None:
        address = next((a for a, s in self.peers.items() if s is sock), None)
        for _ in range(chunks.WINDOW * 64):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = chunks.parse_reply(frames)
            except ProtocolError as e:
                log.warning("transfer server %s: %s", address, e)
                continue
            if isinstance(reply, tuple):
                name, why = reply
                f = self.fetches.get(name) if name is not None else None
                if f is not None and not f.sibling and f.puller is not None:
                    self._fail_source(f, why)
                continue
            f = self.fetches.get(reply.name)
            if f is None or f.sibling or f.puller is None:
                continue
            ok = self._piece(f, reply.offset, reply.total, reply.directory, reply.data)
            if ok and f.puller is not None and address is not None:
                self._pull_from_peer(f, address)

    def on_manager(
        self,
        name: CacheName,
        data: bytes | None,
        error: str | None,
        directory: bool = False,
        offset: int = 0,
        total: int | None = None,
    ) -> None:
        f = self.fetches.get(name)
        if f is None or f.sibling:
            return
        if total is not None:
            self.manager_pieces = True
        if error is not None or data is None:
            self._fail_source(f, error or "no data")
            return
        if total is None:  # the whole file in one message (a manager from before pieces)
            self._whole(f, data, directory)
            return
        if f.puller is None:
            f.puller = chunks.Puller()
        if self._piece(f, offset, total, directory, data) and f.puller is not None:
            self._pull_from_manager(f)

    def _whole(self, f: Fetch, data: bytes, directory: bool) -> None:
        self._reset(f)
        tmp = self.cache.root / f".{f.stage.cache_name}.{os.getpid()}.{time.monotonic_ns()}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        self._complete(f, tmp, directory, len(data))

    # -- arrivals -------------------------------------------------------------------

    def _complete(self, f: Fetch, path: Path, directory: bool, received: int) -> None:
        """The file is whole at ``path`` (a tar if ``directory``): check it, cache it."""
        name = f.stage.cache_name
        f.puller = None
        if directory:
            tree = self.cache.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.unpack"
            try:
                filetree.unpack(path, tree)
            except (tarfile.TarError, OSError, EOFError) as e:
                self._fail_source(f, f"unreadable directory archive ({received} bytes): {e}")
                return
            finally:
                path.unlink(missing_ok=True)
            path = tree
        expected = f.stage.checksum or content_checksum(name)
        if expected is not None:
            got = filetree.tree_hash(path) if directory else sha256_file(path)
            if got != expected:
                _remove(path)
                self._fail_source(f, f"checksum mismatch ({received} bytes received)")
                return
        self._store(f, path, received)

    def _store(self, f: Fetch, path: Path, received: int) -> None:
        name = f.stage.cache_name
        if not path.is_dir():
            os.chmod(path, (f.mode or 0o600) & 0o700)
        evicted = self.cache.evict_for(received)
        if evicted:
            log.info("cache full: evicted %d file(s) for %s", len(evicted), name)
            self.evicted.extend(evicted)
        try:
            size = self.cache.put_path(name, path, f.stage.cache)
        except OSError as e:
            _remove(path)
            self._fail_source(f, f"could not store it in the cache: {e}")
            return
        self.cache.unlock(name)
        src = f.stage.sources[f.source]
        seconds = time.perf_counter() - f.started
        rec = TransferRecord(
            cache_name=name, source=src.kind, source_worker=src.worker, bytes=size, seconds=seconds
        )
        self._done(f, rec)

    def _drop(self, f: Fetch) -> None:
        """``f`` is over (arrived or failed): its place goes to the next pending fetch."""
        if self.fetches.pop(f.stage.cache_name, None) is not None:
            self.active -= 1

    def _done(self, f: Fetch, rec: TransferRecord) -> None:
        name = f.stage.cache_name
        self._drop(f)
        self.cache.adopt(name, f.stage.cache)
        self.arrived.append((name, rec))
        self.records.append(rec)

    def source_lost(self, worker: str, address: str | None) -> None:
        """The manager declared a peer lost: fetches waiting on it move to their next source."""
        for f in list(self.fetches.values()):
            if f.sibling or not 0 <= f.source < len(f.stage.sources):
                continue
            src = f.stage.sources[f.source]
            if src.kind == "peer" and (src.worker == worker or (address and src.address == address)):
                self._fail_source(f, f"peer {worker} was declared lost by the manager")

    def _download(self, name: CacheName, url: str) -> None:
        tmp = self.cache.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.download"
        try:
            if xrootd.is_xrootd(url):  # XRootD's own client, in a process of its own
                xrootd.xrdcp(url, tmp)
            else:
                with urllib.request.urlopen(url, timeout=PEER_TIMEOUT) as r, open(tmp, "wb") as out:
                    while chunk := r.read(1 << 20):
                        out.write(chunk)
            self._url_done.put((name, tmp, None))
        except Exception as e:  # any failure of the download is this source's failure
            tmp.unlink(missing_ok=True)
            why = str(e) if isinstance(e, xrootd.XrdcpError) else f"{type(e).__name__}: {e}"
            self._url_done.put((name, None, why))
        os.write(self._wake_w, b"x")

    def on_wake(self) -> None:
        try:
            os.read(self.wake_r, 65536)
        except BlockingIOError:
            pass
        while True:
            try:
                name, path, err = self._url_done.get_nowait()
            except queue.Empty:
                return
            f = self.fetches.get(name)
            if f is None:
                if path is not None:
                    path.unlink(missing_ok=True)
                continue
            if err is not None or path is None:
                self._fail_source(f, err or "no data")
            else:
                self._complete(f, path, False, path.stat().st_size)

    def tick(self) -> None:
        """Waits on siblings, silent sources and lost requests: look again, ask again."""
        now = time.monotonic()
        for f in list(self.fetches.values()):
            if f.source < 0 and not f.sibling:
                continue  # pending: not started
            if f.sibling:
                self._advance(f)  # its copy may have landed, or the sibling gave up
                continue
            if f.source < 0:
                continue
            src = f.stage.sources[f.source]
            if src.kind == "url":
                continue  # a download times out on its own when it stops making progress
            if src.kind == "manager" and self._manager_silent(f, now):
                continue
            if now > f.deadline and src.kind == "peer":  # (the manager answers or says why not)
                self._fail_source(f, f"no answer in {PEER_TIMEOUT:.0f}s")
            elif f.puller is not None:  # pieces whose answers were dropped: ask again
                if src.kind == "peer" and src.address:
                    self._pull_from_peer(f, src.address)
                elif src.kind == "manager":
                    self._pull_from_manager(f)

    def _manager_silent(self, f: Fetch, now: float) -> bool:
        """A manager that never answered pieces: ask it for whole files from now on."""
        if self.manager_pieces is not None or f.asked_manager is None:
            return False
        if now - f.asked_manager < MANAGER_PIECES_GRACE:
            return False
        log.warning("the manager does not answer requests for pieces: asking for whole files")
        self.manager_pieces = False
        for g in self.fetches.values():
            if g.asked_manager is not None and g.sink is None:
                self._reset(g)
                self._ask_whole.append(g.stage.cache_name)
        return True

    def manager_changed(self) -> None:
        """A new manager: whether it serves pieces is to be learnt again."""
        if self.manager_pieces is False:
            self.manager_pieces = None

    def take(
        self,
    ) -> tuple[list[tuple[CacheName, TransferRecord]], list[tuple[CacheName, str]], list[TransferRecord]]:
        out = (self.arrived, self.failed, self.records)
        self.arrived, self.failed, self.records = [], [], []
        return out

    def close(self) -> None:
        for f in self.fetches.values():
            self._reset(f)
        for s in self.peers.values():
            s.close(0)
        os.close(self.wake_r)
        os.close(self._wake_w)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
