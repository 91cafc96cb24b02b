"""Client files arriving at the manager: whole, or in pieces, and checked before anyone uses them.

A client sends each declared local file and buffer once (``PutFiles``). A small one comes
whole in one message; a large one comes as pieces (``FileMeta.offset``/``total``), which are
written where they belong in a temporary file beside the file store (:class:`kubevine.chunks.Sink`,
any order, a repeated piece ignored), so no upload is ever held in memory. Either way the file
becomes available — to the core, which then lets tasks that read it run — only when it is whole
and its content is what its name promises: ``file-``/``buf-`` names are the sha256 of the bytes
(hashed as in-order pieces arrive, or from disk once at the end), ``dir-`` names the tree hash
of the directory the stored tar unpacks to. Anything else is refused with the reason, for the
client, and the tasks waiting for it fail.

An upload whose client went silent is dropped after :data:`EXPIRE` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import filetree
from kubevine.chunks import Sink
from kubevine.digest import sha256_file
from kubevine.ids import CacheName, ClientId
from kubevine.manager.filestore import UPLOADS, FileStore

log = logging.getLogger(__name__)

EXPIRE = 600.0  # seconds an unfinished upload may go without a piece before it is dropped


def promise(name: CacheName) -> tuple[str, str] | None:
    """What a client file's name promises about its content: ("bytes" | "tree", sha256)."""
    for prefix, kind in (("file-", "bytes"), ("buf-", "bytes"), ("dir-", "tree")):
        if name.startswith(prefix):
            return kind, name[len(prefix) :]
    return None


@dataclass
class Upload:
    """One file arriving in pieces."""

    sink: Sink
    client: ClientId
    touched: float
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)  # over the pieces that came in order
    hashed: int = 0  # bytes the hasher has seen


class Uploads:
    """Uploads under way, and the checks that make a client file available."""

    def __init__(self, store: FileStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.active: dict[CacheName, Upload] = {}

    def whole(self, name: CacheName, data: bytes) -> str | None:
        """A file that came in one piece: stored, or why not."""
        if self.store.has(name):
            return None
        why = self._check_bytes(name, hashlib.sha256(data).hexdigest(), len(data))
        if why is None and name.startswith("dir-"):
            tmp = self._tmp(name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            why = self._check_tree(name, tmp)
            if why is not None:
                tmp.unlink(missing_ok=True)
                return why
            self.store.adopt(name, tmp)
            return None
        if why is None:
            self.store.put(name, data)
        return why

    def piece(
        self, client: ClientId, name: CacheName, offset: int, total: int, data: bytes
    ) -> tuple[bool, str | None]:
        """One piece of a file: (whether the file is here now, why it was refused)."""
        if self.store.has(name):
            self.drop(name)
            return True, None  # sent again (after a reconnect, say): we have it
        up = self.active.get(name)
        if up is None:
            up = self.active[name] = Upload(
                Sink(self._tmp(name), total, name.startswith("dir-")), client, 0.0
            )
        up.touched = self.clock()
        if total != up.sink.total:
            self.drop(name)
            return False, f"file {name}: its size changed from {up.sink.total} to {total} bytes mid-upload"
        try:
            up.sink.write(offset, data)
        except (ValueError, OSError) as e:
            self.drop(name)
            return False, f"file {name}: {e}"
        if offset == up.hashed:
            up.hasher.update(data)
            up.hashed += len(data)
        if not up.sink.complete():
            return False, None
        del self.active[name]
        return self._finish(name, up)

    def _finish(self, name: CacheName, up: Upload) -> tuple[bool, str | None]:
        tmp = up.sink.tmp
        digest = up.hasher.hexdigest() if up.hashed == up.sink.total else sha256_file(tmp)
        why = self._check_bytes(name, digest, up.sink.total)
        if why is None and up.sink.directory:
            why = self._check_tree(name, tmp)
        if why is not None:
            tmp.unlink(missing_ok=True)
            return False, why
        self.store.adopt(name, tmp)
        return True, None

    def started(self, name: CacheName) -> bool:
        return name in self.active

    def drop(self, name: CacheName) -> None:
        up = self.active.pop(name, None)
        if up is not None:
            up.sink.discard()

    def expire(self) -> list[tuple[CacheName, str]]:
        """Drop uploads silent for longer than :data:`EXPIRE`; (name, why) of each."""
        now = self.clock()
        stale = [n for n, up in self.active.items() if now - up.touched > EXPIRE]
        out = []
        for name in stale:
            up = self.active[name]
            why = (
                f"its upload stopped at {up.sink.received} of {up.sink.total} bytes "
                f"(client {up.client} silent for {EXPIRE:.0f}s)"
            )
            log.warning("file %s: %s", name, why)
            self.drop(name)
            out.append((name, why))
        return out

    def close(self) -> None:
        for name in list(self.active):
            self.drop(name)

    # ------------------------------------------------------------------ checks

    def _tmp(self, name: CacheName) -> Path:
        return self.store.work_dir(UPLOADS) / f"{name}.{os.getpid()}.{time.monotonic_ns()}"

    @staticmethod
    def _check_bytes(name: CacheName, digest: str, size: int) -> str | None:
        promised = promise(name)
        if promised is None:
            return f"file {name}: a client sends only file-, buf- and dir- files"
        if promised[0] == "bytes" and promised[1] != digest:
            return (
                f"file {name}: its content ({size} bytes, sha256 {digest[:12]}...) is not what its name says"
            )
        return None

    def _check_tree(self, name: CacheName, tar: Path) -> str | None:
        """A directory's tar: does it unpack to the tree its name hashes?"""
        promised = promise(name)
        assert promised is not None
        where = self.store.work_dir(UPLOADS) / f"{name}.check.{time.monotonic_ns()}"
        try:
            filetree.unpack(tar, where)
            got = filetree.tree_hash(where)
        except (tarfile.TarError, OSError, EOFError) as e:
            return f"directory {name}: its archive cannot be unpacked: {e}"
        finally:
            shutil.rmtree(where, ignore_errors=True)
        if got != promised[1]:
            return f"directory {name}: what it holds is not what its name says"
        return None
