"""Bringing a file that only workers hold to the manager, for a client that asks for it.

A temp file, an unpacked archive, a URL's content or a spilled result lives in workers'
caches; the client may not be able to reach a worker (a notebook outside the cluster), but
it always reaches the manager. So the manager pulls the file from a worker's transfer server
— the same one peers use, with the same proof of the token — a piece at a time
(:class:`kubevine.chunks.Puller`, a window of requests, each asked again after a silence)
into a spool file (:class:`kubevine.chunks.Sink`), never holding it in memory, and serves the
client from there (:mod:`kubevine.manager.fetches`). Each pull runs on a small thread pool
with its own socket, so a slow or silent worker never holds up the manager's loop; finished
pulls are queued and the loop is woken to hand them out.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zmq

from kubevine import chunks
from kubevine.auth import Credentials
from kubevine.digest import sha256_file
from kubevine.ids import CacheName, WorkerId

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 60.0  # seconds a worker may go without sending a piece before the next one is asked


@dataclass
class Fetched:
    """A finished pull: the spool file (a tar when ``directory``) or why there is none."""

    name: CacheName
    path: Path | None
    directory: bool
    size: int
    error: str | None
    source: WorkerId | None
    seconds: float


class PeerFetcher:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        wake_address: str,
        credentials: Credentials,
        spool: Path,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        """``wake_address``: an inproc PULL the manager's loop polls; poked when a pull ends.
        ``spool``: the folder pulled files land in."""
        self.ctx = ctx
        self.credentials = credentials
        self.spool = spool
        self.timeout = timeout
        self._wake_tx = ctx.socket(zmq.PUSH)  # our own: a ZeroMQ socket is one thread's at a time
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(wake_address)
        self._wake_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kubevine-fetch")
        self.finished: queue.SimpleQueue[Fetched] = queue.SimpleQueue()

    def submit(
        self, name: CacheName, sources: list[tuple[WorkerId, str]], checksum: str | None = None
    ) -> None:
        """Pull ``name`` from the first of ``sources`` (worker, transfer address) that has it;
        a file (not a directory) is checked against ``checksum`` when it is given."""
        self.pool.submit(self._run, name, sources, checksum)

    def done(self) -> list[Fetched]:
        out = []
        while True:
            try:
                out.append(self.finished.get_nowait())
            except queue.Empty:
                return out

    def _run(self, name: CacheName, sources: list[tuple[WorkerId, str]], checksum: str | None) -> None:
        t0 = time.perf_counter()
        errors = []
        result = Fetched(name, None, False, 0, None, None, 0.0)
        for wid, address in sources:
            dest = self.spool / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
            try:
                directory, size = self._pull(address, name, dest)
                if checksum is not None and not directory and sha256_file(dest) != checksum:
                    raise ValueError("what it sent does not match the file's checksum")
            except Exception as e:  # this source failed, whatever the reason: try the next one
                dest.unlink(missing_ok=True)
                errors.append(f"{wid}: {e}")
                continue
            result.path, result.directory, result.size, result.source = dest, directory, size, wid
            break
        if result.path is None:
            result.error = f"no worker could send {name}: " + "; ".join(errors)
        result.seconds = time.perf_counter() - t0
        self.finished.put(result)
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _pull(self, address: str, name: CacheName, dest: Path) -> tuple[bool, int]:
        """The file from one transfer server into ``dest``, a piece at a time: (directory, size)."""
        sock: zmq.Socket[bytes] = self.credentials.client(self.ctx.socket(zmq.DEALER))
        sock.setsockopt(zmq.LINGER, 0)
        proof = self.credentials.transfer_proof()
        puller = chunks.Puller()
        sink: chunks.Sink | None = None
        try:
            sock.connect(f"tcp://{address}")
            heard = time.monotonic()
            while True:
                now = time.monotonic()
                for offset, length in puller.requests(now):
                    sock.send_multipart(chunks.get_request(proof, name, offset, length))
                wait = min(puller.retry_after, heard + self.timeout - now)
                if wait <= 0:
                    raise TimeoutError(f"no piece in {self.timeout:.0f}s")
                if not sock.poll(int(wait * 1000) + 1):
                    continue
                reply = chunks.parse_reply(sock.recv_multipart())
                if isinstance(reply, tuple):
                    raise FileNotFoundError(reply[1])
                if reply.name != name:
                    continue
                heard = time.monotonic()
                puller.got(reply.offset, reply.total)
                if sink is None:
                    sink = chunks.Sink(dest.with_name(f".{dest.name}.part"), reply.total, reply.directory)
                sink.write(reply.offset, reply.data)
                if sink.complete():
                    os.replace(sink.tmp, dest)
                    return sink.directory, sink.total
        except BaseException:
            if sink is not None:
                sink.discard()
            raise
        finally:
            sock.close(0)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._wake_lock:
            self._wake_tx.close(0)
