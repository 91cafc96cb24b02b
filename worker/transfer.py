"""Moving files into a worker's cache: from peers, from the manager, from URLs.

Every worker serves its cache to peers (:class:`TransferServer`, a ROUTER socket). To stage
an input, the manager names the sources it prefers (a peer that has it, else the manager,
else the URL); :class:`Fetcher` tries them in order, checks what arrives against the
file's checksum, and moves on to the next source when one fails, answers nothing, or sends
something corrupt. Before fetching, it takes the name's node-wide lock in the shared cache:
if another worker on the node is already fetching the same file, it waits for that copy
instead. Every arrival (or failure) is recorded for the manager's transfer accounting.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from kubevine import filetree
from kubevine.digest import sha256_bytes, sha256_file
from kubevine.ids import CacheName
from kubevine.protocol import StageIn, TransferRecord
from kubevine.worker.cache import Cache, content_checksum

log = logging.getLogger(__name__)

PEER_TIMEOUT = 30.0  # seconds a peer may take to answer before we try the next source
NODE_WAIT = 300.0  # seconds to wait for a file another worker of the node is bringing


class TransferServer:
    """Serves this worker's cache entries to peers that ask for them by name."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], cache: Cache, host: str) -> None:
        self.cache = cache
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        port = self.sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"{host}:{port}"
        self.served_bytes = 0

    def handle(self) -> None:
        while True:
            try:
                ident, op, name_b = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            name = CacheName(name_b.decode())
            try:
                status, data = serve(self.cache, name, op)
            except (OSError, ValueError) as e:
                self.sock.send_multipart([ident, b"err", name_b, str(e).encode()])
                continue
            self.served_bytes += len(data)
            self.sock.send_multipart([ident, status, name_b, data], copy=len(data) < 65536)

    def close(self) -> None:
        self.sock.close(0)


def serve(cache: Cache, name: CacheName, op: bytes = b"get") -> tuple[bytes, bytes]:
    """What a peer asking for ``name`` gets: (b"ok", the file's bytes) or (b"dir", a tar of
    the directory); OSError when this cache holds no intact copy."""
    if op != b"get" or not cache.sound(name):
        raise FileNotFoundError(f"no intact copy of {name} here")
    p = cache.path(name)
    if p.is_dir():
        return b"dir", filetree.pack(p)
    return b"ok", p.read_bytes()


@dataclass
class Fetch:
    stage: StageIn
    source: int = -1  # index into stage.sources of the attempt under way
    started: float = 0.0
    deadline: float = 0.0
    sibling: bool = False  # another worker on this node is fetching it
    errors: list[str] = field(default_factory=list)


class Fetcher:
    """Fetches staged inputs into the cache, one source after another until one works."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cache: Cache,
        ask_manager: Callable[[list[CacheName]], None],
        register: Callable[[object], None],
    ) -> None:
        self.ctx = ctx
        self.cache = cache
        self.ask_manager = ask_manager
        self.register = register
        self.fetches: dict[CacheName, Fetch] = {}
        self.peers: dict[str, zmq.Socket[bytes]] = {}
        self.arrived: list[tuple[CacheName, TransferRecord]] = []
        self.failed: list[tuple[CacheName, str]] = []
        self.records: list[TransferRecord] = []
        self.evicted: list[CacheName] = []
        self._url_done: queue.SimpleQueue[tuple[CacheName, Path | None, str | None]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    # -- requests -------------------------------------------------------------------

    def want(self, stage: StageIn) -> None:
        name = stage.cache_name
        if name in self.fetches:
            return
        f = Fetch(stage)
        self.fetches[name] = f
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
                del self.fetches[name]
                self.failed.append((name, f"no copy appeared on this node in {NODE_WAIT:.0f}s"))
            return
        if not self.cache.try_lock(name):
            f.sibling = True  # another worker of this node fetches it; wait for its copy
            return
        f.sibling = False
        if self.cache.has(name):  # a copy that failed its check: fetch it anew
            self.cache.remove(name)
        f.source += 1
        if f.source >= len(f.stage.sources):
            self.cache.unlock(name)
            del self.fetches[name]
            self.failed.append((name, "; ".join(f.errors) or "no source has it"))
            return
        src = f.stage.sources[f.source]
        f.started = time.perf_counter()
        f.deadline = time.monotonic() + PEER_TIMEOUT
        if src.kind == "peer" and src.address:
            sock = self.peers.get(src.address)
            if sock is None:
                sock = self.peers[src.address] = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, 0)
                sock.connect(f"tcp://{src.address}")
                self.register(sock)
            sock.send_multipart([b"get", name.encode()])
        elif src.kind == "manager":
            self.ask_manager([name])
        elif src.kind == "url" and src.address:
            threading.Thread(target=self._download, args=(name, src.address), daemon=True).start()
        else:
            self._fail_source(f, f"source {src.kind} unusable")

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
        self._advance(f)

    # -- arrivals -------------------------------------------------------------------

    def _arrived(
        self, name: CacheName, data: bytes | None, path: Path | None, directory: bool = False
    ) -> None:
        f = self.fetches.get(name)
        if f is None:
            return
        src = f.stage.sources[f.source]
        received = len(data or b"")
        if directory and data is not None:  # a directory travels as a tar: unpack it first
            path = self.cache.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.unpack"
            try:
                filetree.unpack(data, path)
            except (tarfile.TarError, OSError) as e:
                self._fail_source(f, f"unreadable directory archive ({received} bytes): {e}")
                return
            data = None
        expected = f.stage.checksum or content_checksum(name)
        if expected is not None:
            if data is not None:
                got = sha256_bytes(data)
            elif path is not None and path.is_dir():
                got = filetree.tree_hash(path)
            else:
                got = _sha(path)
            if got != expected:
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                self._fail_source(f, f"checksum mismatch ({received} bytes received)")
                return
        evicted = self.cache.evict_for(len(data) if data is not None else received)
        if evicted:
            log.info("cache full: evicted %d file(s) for %s", len(evicted), name)
            self.evicted.extend(evicted)
        if data is not None:
            self.cache.put_bytes(name, data, f.stage.cache)
            size = len(data)
        else:
            assert path is not None
            size = self.cache.put_path(name, path, f.stage.cache)
        self.cache.unlock(name)
        self._done(
            f,
            TransferRecord(
                cache_name=name,
                source=src.kind,
                source_worker=src.worker,
                bytes=size,
                seconds=time.perf_counter() - f.started,
            ),
        )

    def _done(self, f: Fetch, rec: TransferRecord) -> None:
        name = f.stage.cache_name
        self.fetches.pop(name, None)
        self.cache.adopt(name, f.stage.cache)
        self.arrived.append((name, rec))
        self.records.append(rec)

    def on_peer(self, sock: zmq.Socket[bytes]) -> None:
        while True:
            try:
                status, name_b, payload = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            name = CacheName(name_b.decode())
            f = self.fetches.get(name)
            if f is None or f.sibling:
                continue
            if status in (b"ok", b"dir"):
                self._arrived(name, payload, None, directory=status == b"dir")
            else:
                self._fail_source(f, payload.decode(errors="replace"))

    def source_lost(self, worker: str, address: str | None) -> None:
        """The manager declared a peer lost: fetches waiting on it move to their next source."""
        for f in list(self.fetches.values()):
            if f.sibling or not 0 <= f.source < len(f.stage.sources):
                continue
            src = f.stage.sources[f.source]
            if src.kind == "peer" and (src.worker == worker or (address and src.address == address)):
                self._fail_source(f, f"peer {worker} was declared lost by the manager")

    def on_manager(
        self, name: CacheName, data: bytes | None, error: str | None, directory: bool = False
    ) -> None:
        f = self.fetches.get(name)
        if f is None or f.sibling:
            return
        if error is not None or data is None:
            self._fail_source(f, error or "no data")
        else:
            self._arrived(name, data, None, directory)

    def _download(self, name: CacheName, url: str) -> None:
        tmp = self.cache.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.download"
        try:
            with urllib.request.urlopen(url, timeout=PEER_TIMEOUT) as r, open(tmp, "wb") as out:
                while chunk := r.read(1 << 20):
                    out.write(chunk)
            self._url_done.put((name, tmp, None))
        except Exception as e:  # any failure of the download is this source's failure
            tmp.unlink(missing_ok=True)
            self._url_done.put((name, None, f"{type(e).__name__}: {e}"))
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
                continue
            if err is not None:
                self._fail_source(f, err)
            else:
                self._arrived(name, None, path)

    def tick(self) -> None:
        """Waits on siblings and silent peers: look again."""
        now = time.monotonic()
        for f in list(self.fetches.values()):
            if f.sibling:
                self._advance(f)  # its copy may have landed, or the sibling gave up
            elif f.source >= 0 and now > f.deadline and f.stage.sources[f.source].kind == "peer":
                # (a URL download times out on its own when it stops making progress, so a big
                # one may take as long as it needs; the manager answers or reports a failure)
                self._fail_source(f, f"no answer in {PEER_TIMEOUT:.0f}s")

    def take(
        self,
    ) -> tuple[list[tuple[CacheName, TransferRecord]], list[tuple[CacheName, str]], list[TransferRecord]]:
        out = (self.arrived, self.failed, self.records)
        self.arrived, self.failed, self.records = [], [], []
        return out

    def close(self) -> None:
        for s in self.peers.values():
            s.close(0)
        os.close(self.wake_r)
        os.close(self._wake_w)


def _sha(path: Path | None) -> str:
    return "" if path is None else sha256_file(path)
