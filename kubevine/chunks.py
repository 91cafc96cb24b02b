"""Files move in chunks: one bounded piece per message, pulled with a window, written to disk.

Every path a file's bytes take — a peer's transfer server to a worker, the manager to a
worker, a worker to the manager and on to a client, a client to the manager — moves it as
pieces of at most :data:`CHUNK` bytes. So no message on any socket is larger than
:data:`MAX_MESSAGE` (which every socket enforces, also before a peer has said who it is),
no file is ever held in memory whole on either side, and a peer that asks without reading
gets at most a window of pieces queued for it.

The pieces here are shared by the manager, the worker and the client, and do no I/O on
sockets:

* :class:`Source` reads a piece of a cached file, or of a directory packed into a spooled
  tar once (directories travel as tars);
* :class:`Sink` writes arriving pieces into a temporary file beside their destination,
  whatever order they come in, and says when the file is whole;
* :class:`Puller` decides which pieces to ask for next (at most :data:`WINDOW` in flight)
  and which to ask again after a silence;
* the peer wire (a transfer server's ROUTER) is raw frames, written and read by
  :func:`get_request` / :func:`parse_request` and :func:`chunk_reply` / :func:`parse_reply`,
  each request carrying the workflow's transfer proof (``Credentials.transfer_proof``),
  checked before anything else is looked at.
"""

from __future__ import annotations

import hmac
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import filetree
from kubevine.ids import CacheName
from kubevine.protocol import MAX_MESSAGE, MAX_PIECE, CacheNameField, ProtocolError

__all__ = ["CHUNK", "INLINE_MAX", "MAX_MESSAGE", "WINDOW", "Piece", "Puller", "Request", "Sink", "Source"]

CHUNK = MAX_PIECE  # bytes in one piece
WINDOW = 4  # pieces of one file in flight at once
INLINE_MAX = 8 << 20  # bytes: results and outputs up to this size travel inside their message
RETRY_AFTER = 10.0  # seconds a requested piece may take before it is asked for again

GET = b"kv-get/2"  # a peer's request: [GET, proof, name, offset, length]
CHUNK_REPLY = b"chunk"  # [CHUNK_REPLY, name, offset, total, kind, data]
ERROR_REPLY = b"err"  # [ERROR_REPLY, name, message]
FILE, DIRECTORY = b"f", b"d"

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_NAME_ADAPTER = None


def _check_name(raw: bytes) -> CacheName:
    """A cache name from the wire, checked as every message's are (ProtocolError if not)."""
    global _NAME_ADAPTER
    if _NAME_ADAPTER is None:
        from pydantic import TypeAdapter

        _NAME_ADAPTER = TypeAdapter(CacheNameField)
    try:
        return CacheName(_NAME_ADAPTER.validate_python(raw.decode()))
    except Exception as e:  # UnicodeDecodeError or a ValidationError: a bad name either way
        raise ProtocolError(f"bad cache name {raw[:60]!r}") from e


# --------------------------------------------------------------------------- peer wire


def get_request(proof: bytes, name: CacheName, offset: int, length: int) -> list[bytes]:
    return [GET, proof, name.encode(), _U64.pack(offset), _U32.pack(length)]


@dataclass(frozen=True, slots=True)
class Request:
    name: CacheName
    offset: int
    length: int


def parse_request(frames: list[bytes], proof: bytes) -> Request:
    """A peer's request, once its proof is right; :class:`ProtocolError` (its text safe to send
    back) for anything else. The proof is compared before any other frame is read."""
    if len(frames) != 5 or frames[0] != GET:
        raise ProtocolError(f"a request is {GET.decode()} with 4 frames, not {len(frames)} frame(s)")
    if not hmac.compare_digest(frames[1], proof):
        raise PermissionError("wrong transfer proof: this peer does not hold the workflow's token")
    if len(frames[3]) != _U64.size or len(frames[4]) != _U32.size:
        raise ProtocolError("offset and length are 8 and 4 bytes")
    (offset,), (length,) = _U64.unpack(frames[3]), _U32.unpack(frames[4])
    if length < 1 or length > CHUNK:
        raise ProtocolError(f"a piece is 1..{CHUNK} bytes, not {length}")
    return Request(_check_name(frames[2]), offset, length)


def chunk_reply(name: CacheName, offset: int, total: int, directory: bool, data: bytes) -> list[bytes]:
    return [
        CHUNK_REPLY,
        name.encode(),
        _U64.pack(offset),
        _U64.pack(total),
        DIRECTORY if directory else FILE,
        data,
    ]


def error_reply(name: bytes, message: str) -> list[bytes]:
    return [ERROR_REPLY, name[:256], message.encode()[:4096]]


@dataclass(frozen=True, slots=True)
class Piece:
    name: CacheName
    offset: int
    total: int
    directory: bool
    data: bytes


def parse_reply(frames: list[bytes]) -> Piece | tuple[CacheName | None, str]:
    """A piece, or ``(name, why)`` when the server could not send it (name None if unreadable)."""
    if len(frames) == 3 and frames[0] == ERROR_REPLY:
        try:
            name: CacheName | None = _check_name(frames[1])
        except ProtocolError:
            name = None
        return name, frames[2].decode(errors="replace")
    if len(frames) != 6 or frames[0] != CHUNK_REPLY or len(frames[2]) != 8 or len(frames[3]) != 8:
        raise ProtocolError("malformed reply from a transfer server")
    (offset,), (total,) = _U64.unpack(frames[2]), _U64.unpack(frames[3])
    return Piece(_check_name(frames[1]), offset, total, frames[4] == DIRECTORY, frames[5])


# --------------------------------------------------------------------------- serving


class Source:
    """Pieces of one cache entry: a file read where it lies, a directory packed once into a
    spooled tar (kept until :meth:`close`, so every piece comes from the same archive)."""

    def __init__(self, path: Path, spool_dir: Path) -> None:
        self.directory = path.is_dir() and not path.is_symlink()
        if self.directory:
            spool_dir.mkdir(parents=True, exist_ok=True)
            self.path = spool_dir / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tar"
            filetree.pack_to(path, self.path)
        else:
            self.path = path
        self.total = self.path.stat().st_size
        self.used = time.monotonic()

    def read(self, offset: int, length: int) -> bytes:
        if offset > self.total:
            raise ValueError(f"offset {offset} is past the end ({self.total} bytes)")
        self.used = time.monotonic()
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(min(length, CHUNK, self.total - offset))

    def close(self) -> None:
        if self.directory:
            self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- receiving


class Sink:
    """One file being received: pieces land at their offset in a temporary file next to where
    the file will live; :meth:`complete` once every byte is there."""

    def __init__(self, tmp: Path, total: int, directory: bool = False) -> None:
        if total < 0:
            raise ValueError("a negative size")
        self.tmp = tmp
        self.total = total
        self.directory = directory
        self._have: dict[int, int] = {}  # offset -> length of pieces written
        self.received = 0
        tmp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, total)
        os.close(fd)

    def write(self, offset: int, data: bytes) -> None:
        """Write one piece; a repeated piece is ignored; one past the end is refused."""
        if offset + len(data) > self.total or (not data and self.total):
            raise ValueError(f"a piece of {len(data)} bytes at {offset} does not fit {self.total} bytes")
        if offset in self._have:
            return
        fd = os.open(self.tmp, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        self._have[offset] = len(data)
        self.received += len(data)

    def complete(self) -> bool:
        return self.received >= self.total

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@dataclass
class Puller:
    """Which pieces of one file to ask for: the size is learnt from the first piece; at most
    ``window`` requests are outstanding; a request unanswered for ``retry_after`` seconds is
    made again (its answer may have been dropped by a full queue)."""

    window: int = WINDOW
    chunk: int = CHUNK
    retry_after: float = RETRY_AFTER
    total: int | None = None
    next_offset: int = 0
    asked: dict[int, float] = field(default_factory=dict)  # offset -> when

    def requests(self, now: float) -> list[tuple[int, int]]:
        """The (offset, length) pairs to ask for now."""
        out: list[tuple[int, int]] = []
        for off, when in list(self.asked.items()):
            if now - when > self.retry_after:
                self.asked[off] = now
                out.append((off, self._length(off)))
        if self.total is None:  # only the first piece, until the size is known
            if not self.asked:
                self.asked[0] = now
                self.next_offset = self.chunk
                out.append((0, self.chunk))
            return out
        while len(self.asked) < self.window and self.next_offset < self.total:
            self.asked[self.next_offset] = now
            out.append((self.next_offset, self._length(self.next_offset)))
            self.next_offset += self.chunk
        return out

    def got(self, offset: int, total: int) -> None:
        """A piece arrived (its offset and the file's size as the sender says)."""
        if self.total is None:
            self.total = total
        elif total != self.total:
            raise ValueError(f"the size changed from {self.total} to {total} bytes mid-transfer")
        self.asked.pop(offset, None)

    def _length(self, offset: int) -> int:
        return self.chunk if self.total is None else max(1, min(self.chunk, self.total - offset))
