"""The worker's file cache: one entry per cache name, safe to share between the workers
of a node, bounded in size.

A node-local cache directory (a hostPath volume in Kubernetes) may be shared by every worker
on the node, so a file lands on the node once:

- an entry is written under a temporary name and renamed into place, so a reader never
  sees a partial file;
- a worker that is about to fetch a name takes that name's lock (``flock`` on
  ``.locks/<name>``); a second worker that wants the same name finds the lock taken and
  waits for the file to appear instead of fetching it again;
- an entry's size is bounded by the worker's disk: past the limit, least-recently-used
  entries that no task of this worker is using are evicted (``forever`` entries too, last).
  The order is a heap with lazy deletion (each use pushes a new stamp; stale stamps are
  skipped when popped, and the heap is rebuilt when they outnumber the entries), so an
  arrival costs O(log n), not a sort of the whole cache;
- entries are their user's alone (files 0600 or 0700, directories 0700: the worker runs
  with umask 077).

Cache names say what a file is (a content hash, a URL, the producing task), so a name
never refers to two different contents and an entry is never stale.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from kubevine import filetree
from kubevine.digest import sha256_file
from kubevine.ids import CacheName
from kubevine.protocol import CacheLevel

LEVEL_ORDER = {CacheLevel.TASK: 0, CacheLevel.WORKFLOW: 1, CacheLevel.WORKER: 2, CacheLevel.FOREVER: 3}


def content_checksum(name: CacheName) -> str | None:
    """The sha256 a name promises, for names made from content ("file-…", "buf-…", and
    "dir-…", a directory's :func:`~kubevine.filetree.tree_hash`)."""
    for prefix in ("file-", "buf-", "dir-"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def dir_size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


class Cache:
    """One worker's view of the (possibly shared) cache directory.

    ``pins`` counts, per name, the tasks of this worker that use the entry; the cache only
    reads it (the worker's core keeps it) and never evicts a pinned entry.
    """

    def __init__(
        self, root: Path, limit_bytes: int | None = None, pins: Mapping[CacheName, int] | None = None
    ) -> None:
        self.root = root
        self.limit = limit_bytes
        root.mkdir(parents=True, exist_ok=True)
        (root / ".locks").mkdir(exist_ok=True)
        self.used_at: dict[CacheName, float] = {}
        self.sizes: dict[CacheName, int] = {}
        self.levels: dict[CacheName, CacheLevel] = {}
        self.pins: Mapping[CacheName, int] = {} if pins is None else pins
        self._total = 0  # sum of sizes
        self._heap: list[tuple[bool, int, CacheName]] = []  # (forever, stamp, name): eviction order
        self._stamps: dict[CacheName, int] = {}  # each entry's latest stamp (older ones are stale)
        self._clock = itertools.count()
        self._locks: dict[CacheName, int] = {}  # names whose lock we hold -> fd
        self._sigs: dict[CacheName, tuple[int, int]] = {}  # (size, mtime) when last known good

    # -- names ----------------------------------------------------------------------

    def path(self, name: CacheName) -> Path:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad cache name {name!r}")
        return self.root / name

    def has(self, name: CacheName) -> bool:
        return self.path(name).exists()

    def names(self) -> list[CacheName]:
        return [CacheName(p.name) for p in self.root.iterdir() if not p.name.startswith(".")]

    # -- writing --------------------------------------------------------------------

    def put_bytes(self, name: CacheName, data: bytes, level: CacheLevel = CacheLevel.WORKFLOW) -> Path:
        p = self.path(name)
        tmp = self.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, p)
        self._added(name, len(data), level)
        return p

    def put_path(self, name: CacheName, src: Path, level: CacheLevel = CacheLevel.WORKFLOW) -> int:
        """Move a file or directory (a task's output) into the cache; its size."""
        p = self.path(name)
        size = dir_size(src)
        tmp = self.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        shutil.move(str(src), tmp)
        if p.exists():  # someone on this node made it first: same name, same content
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, p)
        self._added(name, size, level)
        return size

    def _added(self, name: CacheName, size: int, level: CacheLevel) -> None:
        try:
            st = self.path(name).stat()
            self._sigs[name] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass
        self._total += size - self.sizes.get(name, 0)
        self.sizes[name] = size
        old = self.levels.get(name)
        if old is None or LEVEL_ORDER[level] > LEVEL_ORDER[old]:
            self.levels[name] = level
        self.used(name)

    def used(self, name: CacheName) -> None:
        """``name`` was just used: it is the last to be evicted among its level."""
        self.used_at[name] = time.monotonic()
        if name not in self.sizes:
            return
        stamp = next(self._clock)
        self._stamps[name] = stamp
        heapq.heappush(self._heap, (self.levels.get(name) == CacheLevel.FOREVER, stamp, name))
        if len(self._heap) > 2 * len(self._stamps) + 1024:  # mostly stale: rebuild
            self._heap = [(self.levels.get(n) == CacheLevel.FOREVER, st, n) for n, st in self._stamps.items()]
            heapq.heapify(self._heap)

    def adopt(self, name: CacheName, level: CacheLevel) -> None:
        """A file already in the (shared) cache becomes one of ours to account for."""
        if name not in self.sizes:
            try:
                self._added(name, dir_size(self.path(name)), level)
            except OSError:
                pass
        else:
            self.used(name)

    # -- node-wide fetch lock --------------------------------------------------------

    def try_lock(self, name: CacheName) -> bool:
        """Take the node-wide right to fetch ``name``; False if another worker holds it."""
        if name in self._locks:
            return True
        fd = os.open(self.root / ".locks" / name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._locks[name] = fd
        return True

    def unlock(self, name: CacheName) -> None:
        fd = self._locks.pop(name, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- use ------------------------------------------------------------------------

    def link_into(self, name: CacheName, dest: Path) -> None:
        """Place a cached file in a sandbox: a hard link when possible, else a copy. A
        directory is copied: ``sound`` signs it by its top-level stat only, so a task writing
        through a hard link inside it would change the cached copy unnoticed."""
        src = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.used(name)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
            return
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)

    def verify(self, name: CacheName, expected: str | None) -> bool:
        """Whether the entry's content matches its expected sha256 (when one is known)."""
        want = expected or content_checksum(name)
        p = self.path(name)
        if want is None:
            return p.exists()
        try:
            return (filetree.tree_hash(p) if p.is_dir() else sha256_file(p)) == want
        except OSError:
            return False

    def sound(self, name: CacheName, expected: str | None = None) -> bool:
        """Whether the entry is there and intact. Its checksum is checked again only when
        its size or modification time changed since it was last known good."""
        p = self.path(name)
        try:
            st = p.stat()
        except OSError:
            return False
        sig = (st.st_size, st.st_mtime_ns)
        if self._sigs.get(name) == sig:
            return True
        ok = self.verify(name, expected)
        if ok:
            self._sigs[name] = sig
        return ok

    def remove(self, name: CacheName) -> None:
        p = self.path(name)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        self._total -= self.sizes.pop(name, 0)
        self._stamps.pop(name, None)
        self.used_at.pop(name, None)
        self.levels.pop(name, None)
        self._sigs.pop(name, None)

    # -- limits ---------------------------------------------------------------------

    def total(self) -> int:
        return self._total

    def evict_for(self, incoming: int = 0) -> list[CacheName]:
        """Evict least-recently-used unpinned entries until ``incoming`` more bytes fit."""
        if self.limit is None or self._total + incoming <= self.limit:
            return []
        evicted: list[CacheName] = []
        pinned: list[tuple[bool, int, CacheName]] = []
        while self._heap and self._total + incoming > self.limit:
            entry = heapq.heappop(self._heap)
            name = entry[2]
            if self._stamps.get(name) != entry[1]:
                continue  # stale: used again since, or gone
            if self.pins.get(name):
                pinned.append(entry)  # in use: stays, and keeps its place
                continue
            self.remove(name)
            evicted.append(name)
        for entry in pinned:
            heapq.heappush(self._heap, entry)
        return evicted

    def forget_levels(self, levels: set[CacheLevel]) -> list[CacheName]:
        """Remove our entries of these levels (at task end, workflow end, worker exit)."""
        gone = [n for n, lv in self.levels.items() if lv in levels and not self.pins.get(n)]
        for n in gone:
            self.remove(n)
        return gone

    def close(self) -> None:
        for name in list(self._locks):
            self.unlock(name)
