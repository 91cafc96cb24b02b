"""Directories as files: one content hash for a whole tree, and a tar form to move it in.

A directory travels (client → manager → worker, worker → worker, worker → client) as one
tar archive, and is named and checked by a hash of what it contains — its entries' relative
paths, their kinds, executable bits and contents — so the same tree gets the same name
wherever it is, however the archive was built. The client, the workers and the manager all
use these functions, so the two ends of a transfer always agree.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from kubevine.digest import sha256_file


def tree_hash(root: Path, file_hash: Callable[[Path], str] = sha256_file) -> str:
    """sha256 over a directory's entries, sorted: what it holds, not how it is stored."""
    d = hashlib.sha256(b"kubevine-tree-1\n")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        d.update(f"d {rel_dir}\n".encode())
        for name in sorted(filenames + [n for n in dirnames if (base / n).is_symlink()]):
            p = base / name
            rel = (base / name).relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                d.update(f"l {rel} {os.readlink(p)}\n".encode())
            elif stat.S_ISREG(st.st_mode):
                x = "x" if st.st_mode & 0o100 else "-"
                d.update(f"f {rel} {x} {file_hash(p)}\n".encode())
    return d.hexdigest()


def pack(root: Path) -> bytes:
    """The directory as an uncompressed tar archive (entries relative to ``root``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _pack(root, tar)
    return buf.getvalue()


def pack_to(root: Path, dest: Path) -> None:
    """The same archive, written to the file ``dest`` (a large tree never sits in memory)."""
    with tarfile.open(dest, mode="w") as tar:
        _pack(root, tar)


def _pack(root: Path, tar: tarfile.TarFile) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            tar.add(p, arcname=p.relative_to(root).as_posix(), recursive=False)


def unpack(data: bytes | Path, dest: Path) -> None:
    """Unpack a tar archive (bytes, or a file of any tar compression) into ``dest``, which
    must not exist. Entries that would land outside ``dest`` (absolute paths, ``..``, links
    pointing out) or special files are refused with :class:`tarfile.TarError`."""
    dest.mkdir(parents=True)
    try:
        if isinstance(data, Path):
            with tarfile.open(data, mode="r:*") as tar:
                tar.extractall(dest, filter="data")
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                tar.extractall(dest, filter="data")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def place(src: Path, dest: Path) -> None:
    """Put the file or directory ``src`` at ``dest``, replacing what is there, in one rename
    where possible (a reader sees the old or the new one, never a mix)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.kubevine-old-{time.monotonic_ns()}")
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if src.is_dir() and (dest.is_symlink() or dest.exists()):
            dest.unlink()  # a directory replaces a file: no single rename does that
        os.replace(src, dest)


def link_tree(src: Path, dest: Path) -> None:
    """A copy of the tree ``src`` at ``dest`` whose files are hard links when possible."""

    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dest, symlinks=True, copy_function=link_or_copy)
