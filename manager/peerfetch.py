"""Bringing a file that only workers hold back to the client that asks for it (``m.fetch_file``).

A temp file, an unpacked archive or a URL's content lives in workers' caches; the client may
not be able to reach a worker (a notebook outside the cluster), but it always reaches the
manager. So the manager fetches the file from a worker's transfer server — the same one
peers use, the same request — and hands the bytes to the client. Each fetch runs on a small
thread pool with its own socket, so a slow or silent worker never holds up the manager's
loop; finished fetches are queued and the loop is woken to deliver them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zmq

from kubevine.ids import CacheName, WorkerId

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 60.0  # seconds one worker may take to answer before the next one is asked


@dataclass
class Fetched:
    """A finished fetch: the content (a tar when ``directory``) or why there is none."""

    ident: bytes  # the client's route
    request: int
    name: CacheName
    data: bytes | None
    directory: bool
    error: str | None
    source: WorkerId | None
    seconds: float


class PeerFetcher:
    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], wake_address: str, timeout: float = FETCH_TIMEOUT
    ) -> None:
        """``wake_address``: an inproc PULL the manager's loop polls; poked when a fetch ends."""
        self.ctx = ctx
        self.timeout = timeout
        self._wake_tx = ctx.socket(zmq.PUSH)  # our own: a ZeroMQ socket is one thread's at a time
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(wake_address)
        self._wake_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kubevine-fetch")
        self.finished: queue.SimpleQueue[Fetched] = queue.SimpleQueue()

    def submit(
        self, ident: bytes, request: int, name: CacheName, sources: list[tuple[WorkerId, str]]
    ) -> None:
        """Fetch ``name`` from the first of ``sources`` (worker, transfer address) that has it."""
        self.pool.submit(self._run, ident, request, name, sources)

    def done(self) -> list[Fetched]:
        out = []
        while True:
            try:
                out.append(self.finished.get_nowait())
            except queue.Empty:
                return out

    def _run(self, ident: bytes, request: int, name: CacheName, sources: list[tuple[WorkerId, str]]) -> None:
        t0 = time.perf_counter()
        errors = []
        result = Fetched(ident, request, name, None, False, None, None, 0.0)
        for wid, address in sources:
            try:
                status, payload = self._get(address, name)
            except Exception as e:  # this source failed, whatever the reason: try the next one
                errors.append(f"{wid}: {e}")
                continue
            if status in (b"ok", b"dir"):
                result.data, result.directory, result.source = payload, status == b"dir", wid
                break
            errors.append(f"{wid}: {payload.decode(errors='replace')}")
        if result.data is None:
            result.error = f"no worker could send {name}: " + "; ".join(errors)
        result.seconds = time.perf_counter() - t0
        self.finished.put(result)
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _get(self, address: str, name: CacheName) -> tuple[bytes, bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        try:
            sock.connect(f"tcp://{address}")
            sock.send_multipart([b"get", name.encode()])
            if not sock.poll(int(self.timeout * 1000)):
                raise TimeoutError(f"no answer in {self.timeout:.0f}s")
            status, _name, payload = sock.recv_multipart()
            return status, payload
        finally:
            sock.close(0)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._wake_lock:
            self._wake_tx.close(0)
