"""The worker's file cache: one file per cache name, written atomically.

A file lands under a temporary name and is renamed into place, so a reader never sees
a partial file. Several workers may share one cache directory (a node-local volume);
the rename makes concurrent writers of the same name safe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubevine.ids import CacheName


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: CacheName) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad cache name {name!r}")
        return self.root / name

    def has(self, name: CacheName) -> bool:
        return self.path(name).exists()

    def put_bytes(self, name: CacheName, data: bytes) -> Path:
        p = self.path(name)
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return p

    def names(self) -> list[CacheName]:
        return [CacheName(p.name) for p in self.root.iterdir() if not p.name.startswith(".")]

    def link_into(self, name: CacheName, dest: Path) -> None:
        """Place a cached file in a sandbox: a hard link when possible, else a copy."""
        src = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
            return
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
