"""The node-cache keeper: prepares each namespace's cache folder on a node, keeps the node
under its limit, and clears what killed workers left.

Exists because the node cache is a hostPath, and three things about a hostPath cannot be
left to the workflows that use it:

* **Who prepares the folder.** A kubelet creates a missing hostPath folder owned by root,
  which the workers (uid 10001) cannot write, and `fsGroup` does not apply to hostPath
  volumes. A workflow's pods therefore mount `<root>/<namespace>` with type `Directory`
  (it must exist), and this keeper — one pod per node, a DaemonSet the chart installs in the
  operator's namespace, the only thing of kubevine that runs as root — creates it, owned by
  the workers' user, for every namespace the operator serves. No container of a workflow
  runs as root, and no workflow names a host path.
* **How full the node gets.** Each worker counts only the files it fetched itself; several
  workers on a node would each fill the node to their own limit. The keeper adds up every
  namespace's folder and evicts the least recently used entries (last use: the latest of
  access, modification and status change — a hard link into a sandbox changes the last) until
  the node is under its limit again; a file hard-linked into a running task's sandbox is in
  use and stays.
* **What a killed worker leaves.** A worker killed mid-fetch leaves its temporary file
  (`.<name>.<pid>.<n>.tmp`) and lock files; the keeper removes those untouched for
  `--stale-seconds`.

The planning is pure (`plan_eviction`, `stale`); the loop around it lists folders, removes
files and, with `--all-namespaces`, watches VineWorkflows to learn which namespaces need a
folder (with `--namespace`, the chart names them and the keeper needs no API access).

`kubevine operator node-cache --root DIR --size-limit 50Gi (--namespace NS ... | --all-namespaces)`
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevine import logs
from kubevine.operator.quantity import to_mib

log = logging.getLogger(__name__)

#: Past the limit, evict down to this fraction of it (so one new file does not evict again).
LOW_WATERMARK = 0.9


@dataclass(frozen=True)
class Entry:
    """One cached file or directory in a namespace's folder."""

    path: Path
    size: int
    last_used: float
    in_use: bool = False


def plan_eviction(entries: Sequence[Entry], limit: int, low: float = LOW_WATERMARK) -> list[Entry]:
    """The entries to remove so the node is under `limit` again (down to `low` of it),
    least recently used first, never one in use. Nothing while the node is under its limit."""
    total = sum(e.size for e in entries)
    if total <= limit:
        return []
    target = int(limit * low)
    chosen = []
    for entry in sorted((e for e in entries if not e.in_use), key=lambda e: (e.last_used, str(e.path))):
        if total <= target:
            break
        chosen.append(entry)
        total -= entry.size
    return chosen


def is_leftover(name: str) -> bool:
    """A temporary file of an interrupted fetch (`.<name>.<pid>.<n>.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def stale(mtimes: Iterable[tuple[Path, float]], now: float, age: float) -> list[Path]:
    """The paths untouched for `age` seconds."""
    return [p for p, mtime in mtimes if now - mtime >= age]


# --- the node's folders --------------------------------------------------------------------


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.lstat().st_size


def scan(folder: Path) -> list[Entry]:
    """The cache entries of one namespace's folder."""
    entries = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        try:
            st = path.lstat()
            entries.append(
                Entry(
                    path=path,
                    size=_size(path),
                    last_used=max(st.st_atime, st.st_mtime, st.st_ctime),
                    in_use=path.is_file() and st.st_nlink > 1,
                )
            )
        except OSError:  # removed while we looked: a worker evicted it
            continue
    return entries


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _unlocked(lock: Path) -> bool:
    """Whether no worker holds this lock file (it is taken, for a moment, to find out)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@dataclass
class Keeper:
    """One node's cache root and what the keeper does to it."""

    root: Path
    limit_bytes: int
    stale_seconds: float = 600.0
    uid: int = 10001
    gid: int = 10001

    def prepare(self, namespaces: Iterable[str]) -> list[str]:
        """Make `<root>/<namespace>` for each namespace, owned by the workers; the new ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the kubelet (root) mounts the folders; nobody lists them
        made = []
        for namespace in namespaces:
            folder = self.root / namespace
            if not folder.is_dir():
                folder.mkdir(mode=0o750)
                made.append(namespace)
            st = folder.stat()
            if (st.st_uid, st.st_gid) != (self.uid, self.gid):
                os.chown(folder, self.uid, self.gid)
                folder.chmod(0o750)
        return made

    def folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def clean(self, now: float) -> list[Path]:
        """Remove what interrupted workers left: old temporary files, unheld old locks."""
        removed = []
        for folder in self.folders():
            leftovers = [(p, p.lstat().st_mtime) for p in folder.iterdir() if is_leftover(p.name)]
            for path in stale(leftovers, now, self.stale_seconds):
                _remove(path)
                removed.append(path)
            locks = folder / ".locks"
            if locks.is_dir():
                for path in stale(
                    ((p, p.lstat().st_mtime) for p in locks.iterdir()), now, self.stale_seconds
                ):
                    if _unlocked(path):
                        path.unlink(missing_ok=True)
                        removed.append(path)
        return removed

    def evict(self) -> tuple[list[Entry], int]:
        """Evict past the node's limit; (what was evicted, bytes left)."""
        entries = [e for folder in self.folders() for e in scan(folder)]
        chosen = plan_eviction(entries, self.limit_bytes)
        for entry in chosen:
            _remove(entry.path)
        return chosen, sum(e.size for e in entries) - sum(e.size for e in chosen)

    def once(self, namespaces: Iterable[str], now: float) -> None:
        made = self.prepare(namespaces)
        removed = self.clean(now)
        evicted, left = self.evict()
        if made:
            log.info("node cache: prepared %s", ", ".join(str(self.root / n) for n in made))
        if removed:
            log.info("node cache: removed %d leftover(s) of interrupted workers", len(removed))
        if evicted:
            log.info(
                "node cache: evicted %d entries (%d MB) past the limit of %d MB; %d MB left",
                len(evicted),
                sum(e.size for e in evicted) >> 20,
                self.limit_bytes >> 20,
                left >> 20,
            )


# --- which namespaces ----------------------------------------------------------------------


class WorkflowNamespaces:
    """The namespaces that have a VineWorkflow, kept up to date by a watch (cluster-wide)."""

    def __init__(self, wake: threading.Event) -> None:
        self.names: set[str] = set()
        self._wake = wake
        self._lock = threading.Lock()

    def snapshot(self) -> set[str]:
        with self._lock:
            return set(self.names)

    def run(self, stop: threading.Event) -> None:  # pragma: no cover - needs a cluster (tests/realkube)
        import kubernetes.client
        import kubernetes.watch

        from kubevine.operator.kube import load_api_client
        from kubevine.operator.naming import GROUP, PLURAL, VERSION

        api: Any = kubernetes.client.CustomObjectsApi(load_api_client())
        while not stop.is_set():
            try:
                listed = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                with self._lock:
                    self.names = {item["metadata"]["namespace"] for item in listed.get("items", [])}
                self._wake.set()
                version = listed["metadata"]["resourceVersion"]
                watch: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                for event in watch.stream(
                    api.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    if stop.is_set():
                        watch.stop()
                        break
                    if event["type"] == "ADDED":
                        with self._lock:
                            new = event["object"]["metadata"]["namespace"] not in self.names
                            self.names.add(event["object"]["metadata"]["namespace"])
                        if new:
                            self._wake.set()
            except Exception as e:  # the API server restarted, a 410: list again after a pause
                log.warning("node cache: watching VineWorkflows failed: %s", e)
                stop.wait(5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubevine operator node-cache",
        description="Prepare and tend the node cache folders of one node (the chart's DaemonSet).",
    )
    parser.add_argument("--root", required=True, help="the node cache root (a hostPath)")
    parser.add_argument("--size-limit", default="50Gi", help="bytes the node keeps in all (e.g. 50Gi)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between two passes")
    parser.add_argument("--stale-seconds", type=float, default=600.0, help="age of a leftover to remove")
    parser.add_argument("--owner", default="10001:10001", help="uid:gid of the workers")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS")
    where.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--log-level", default=os.environ.get("KUBEVINE_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format", choices=["text", "json"], default=os.environ.get("KUBEVINE_LOG_FORMAT") or "text"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    uid, _, gid = str(args.owner).partition(":")
    keeper = Keeper(
        Path(args.root),
        to_mib(args.size_limit) * 1024 * 1024,
        stale_seconds=args.stale_seconds,
        uid=int(uid),
        gid=int(gid or uid),
    )
    wake, stop = threading.Event(), threading.Event()
    known = WorkflowNamespaces(wake)
    if args.all_namespaces:
        threading.Thread(target=known.run, args=(stop,), name="watch-workflows", daemon=True).start()
    log.info(
        "node cache keeper: %s, limit %s, every %gs, for %s",
        keeper.root,
        args.size_limit,
        args.interval,
        "the namespaces of every VineWorkflow" if args.all_namespaces else ", ".join(args.namespaces),
    )
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while True:
            namespaces = known.snapshot() if args.all_namespaces else set(args.namespaces)
            keeper.once(sorted(namespaces), time.time())
            if args.once:
                return 0
            wake.clear()
            # Wake early when a namespace needs its folder; otherwise one pass per interval.
            with contextlib.suppress(KeyboardInterrupt):
                deadline = time.monotonic() + args.interval
                while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                    wake.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if stop.is_set():
                return 0
    except KeyboardInterrupt:
        return 0
