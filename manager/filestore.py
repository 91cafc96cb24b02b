"""Files clients sent to the manager, kept on disk by cache name until workers fetch them.

Every declared local file and buffer passes through here once per workflow (not once per
task). A file is only here once it is whole and its content is what its name promises
(``file-``/``buf-`` names are the sha256 of the bytes, ``dir-`` names the tree hash of the
directory whose tar is stored): pieces of an upload are assembled beside the store
(:mod:`kubevine.manager.uploads`) and moved in by :meth:`FileStore.adopt`. Files are read
back a piece at a time (:meth:`FileStore.read`), so serving a large file never holds it in
memory. The folder is the manager's own: 0700, each file 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubevine.ids import CacheName

SPOOL = ".spool"  # files fetched from workers for clients, for a while (kubevine.manager.fetches)
UPLOADS = ".uploads"  # client files arriving in pieces (kubevine.manager.uploads)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)  # also when an older manager made it readable by others
        self._sizes: dict[CacheName, int] = {}

    def path(self, name: CacheName) -> Path:
        if "/" in name or name.startswith(".") or "\x00" in name:
            raise ValueError(f"bad cache name {name!r}")
        return self.root / name

    def work_dir(self, which: str) -> Path:
        """A folder of ours beside the files (``SPOOL``, ``UPLOADS``), 0700."""
        d = self.root / which
        d.mkdir(exist_ok=True, mode=0o700)
        return d

    def has(self, name: CacheName) -> bool:
        return self.size(name) is not None

    def size(self, name: CacheName) -> int | None:
        size = self._sizes.get(name)
        if size is None:
            try:
                size = self._sizes[name] = self.path(name).stat().st_size
            except (OSError, ValueError):
                return None
        return size

    def put(self, name: CacheName, data: bytes) -> None:
        p = self.path(name)
        if p.exists():
            return
        tmp = p.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
        self._sizes[name] = len(data)

    def adopt(self, name: CacheName, tmp: Path) -> None:
        """Move a whole, checked file (written elsewhere under the root) in under ``name``."""
        p = self.path(name)
        if p.exists():
            tmp.unlink(missing_ok=True)
            return
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
        self._sizes.pop(name, None)

    def get(self, name: CacheName) -> bytes | None:
        """The whole file (for files small enough to keep in the state store, and the old
        whole-file messages)."""
        try:
            return self.path(name).read_bytes()
        except (OSError, ValueError):
            return None

    def read(self, name: CacheName, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end); OSError/ValueError if it is not here."""
        with open(self.path(name), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def names(self) -> list[CacheName]:
        return [CacheName(p.name) for p in self.root.iterdir() if not p.name.startswith(".")]
