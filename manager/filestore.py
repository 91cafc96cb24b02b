"""Files clients sent to the manager, kept on disk by cache name until workers fetch them.

Until the data plane moves files peer to peer, every declared local file and buffer
passes through here once per workflow (not once per task).
"""

from __future__ import annotations

import os
from pathlib import Path

from kubevine.ids import CacheName


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: CacheName) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad cache name {name!r}")
        return self.root / name

    def put(self, name: CacheName, data: bytes) -> None:
        p = self._path(name)
        if p.exists():
            return
        tmp = p.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def get(self, name: CacheName) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except (OSError, ValueError):
            return None

    def names(self) -> list[CacheName]:
        return [CacheName(p.name) for p in self.root.iterdir() if not p.name.startswith(".")]
