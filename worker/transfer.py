"""Serving this worker's cache to peers, one bounded piece at a time.

Every worker serves its cache to peers (:class:`TransferServer`, a ROUTER socket); the other
side is :class:`kubevine.worker.fetcher.Fetcher`. The wire is :mod:`kubevine.chunks`: a
request names a piece of a file (at most :data:`kubevine.chunks.CHUNK` bytes) and carries the
workflow's transfer proof, which is checked before anything else in the request is read. So:

- a peer without the token gets an error and nothing else (the proof is derived from it);
- any request that is not well formed is answered with an error reply — no request, however
  malformed, raises out of the worker's loop;
- a reply is never a whole file: memory per request is one piece;
- replies queue at most ``SNDHWM`` deep per peer (``ZMQ_ROUTER_MANDATORY``): a reply that
  cannot be queued is dropped and the puller asks again, so a peer that asks without reading
  holds at most ``SNDHWM`` pieces of this worker's memory;
- a cache entry that is a symbolic link is never served (nothing here follows a link out of
  the cache).

A directory travels as a tar spooled once under the cache's ``.spool/`` (every piece comes
from the same archive); idle spools are removed after ``SPOOL_IDLE`` seconds.
"""

from __future__ import annotations

import logging
import time

import zmq

from kubevine import chunks
from kubevine.auth import Credentials
from kubevine.ids import CacheName
from kubevine.protocol import ProtocolError
from kubevine.worker.cache import Cache

log = logging.getLogger(__name__)

SNDHWM = 32  # pieces queued for one peer at most
SPOOL_IDLE = 60.0  # seconds a directory's spooled tar outlives its last request
MAX_SOURCES = 256  # open sources (files and spooled directories) at most
PER_TURN = 256  # requests handled per call of handle(): the loop has other work too


class TransferServer:
    """Serves pieces of this worker's cache entries to peers holding the workflow's token."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], cache: Cache, host: str, creds: Credentials
    ) -> None:
        self.cache = cache
        self.proof = creds.transfer_proof()
        self.sock: zmq.Socket[bytes] = creds.server(ctx.socket(zmq.ROUTER))
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, SNDHWM)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        port = self.sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"{host}:{port}"
        self.spool = cache.root / ".spool"
        self.sources: dict[CacheName, chunks.Source] = {}
        self.served_bytes = 0
        self.dropped = 0  # replies not queued (the peer does not read): it asks again
        self.refused = 0  # requests answered with an error

    def handle(self) -> None:
        """Answer the requests waiting (at most PER_TURN; the poller says when there are more)."""
        for _ in range(PER_TURN):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            if len(parts) < 2:
                continue  # not even a route: nothing to answer
            ident, frames = parts[0], parts[1:]
            try:
                reply = self._answer(frames)
            except Exception as e:  # a bug of ours must not end the worker: the peer hears of it
                log.exception("transfer server: request failed")
                reply = chunks.error_reply(_name_of(frames), f"internal error: {type(e).__name__}")
            self._send(ident, reply)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        try:
            req = chunks.parse_request(frames, self.proof)
        except (ProtocolError, PermissionError) as e:
            self.refused += 1
            return chunks.error_reply(_name_of(frames), str(e))
        try:
            src = self._source(req.name)
            data = src.read(req.offset, req.length)
        except (OSError, ValueError) as e:
            self.refused += 1
            return chunks.error_reply(req.name.encode(), str(e))
        self.served_bytes += len(data)
        return chunks.chunk_reply(req.name, req.offset, src.total, src.directory, data)

    def _source(self, name: CacheName) -> chunks.Source:
        src = self.sources.get(name)
        p = self.cache.path(name)
        if src is not None and (src.directory or p.exists()):
            return src
        if p.is_symlink():
            raise PermissionError(f"{name} is a symbolic link here: not served")
        if not self.cache.sound(name):
            raise FileNotFoundError(f"no intact copy of {name} here")
        if len(self.sources) >= MAX_SOURCES:
            self.expire()
            if len(self.sources) >= MAX_SOURCES:  # all busy: the least recently used goes
                self.forget(min(self.sources, key=lambda n: self.sources[n].used))
        src = self.sources[name] = chunks.Source(p, self.spool)
        return src

    def _send(self, ident: bytes, reply: list[bytes]) -> None:
        try:
            self.sock.send_multipart([ident, *reply], zmq.NOBLOCK, copy=len(reply[-1]) < 65536)
        except zmq.Again:  # its queue is full: it is not reading; it will ask again
            self.dropped += 1
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone
            self.dropped += 1

    def expire(self, idle: float = SPOOL_IDLE) -> None:
        """Forget sources unused for ``idle`` seconds (their spooled tars are removed)."""
        now = time.monotonic()
        for name, src in list(self.sources.items()):
            if now - src.used >= idle:
                del self.sources[name]
                src.close()

    def forget(self, name: CacheName) -> None:
        """The entry left the cache: a new copy gets a new source."""
        src = self.sources.pop(name, None)
        if src is not None:
            src.close()

    def close(self) -> None:
        self.expire(0.0)
        self.sock.close(0)


def _name_of(frames: list[bytes]) -> bytes:
    """The name a request speaks of, as bytes to echo in an error (never decoded here)."""
    return frames[2][:256] if len(frames) > 2 else b""
