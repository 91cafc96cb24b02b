"""Files a worker makes itself from other files: unpacked archives and minitask products.

``declare_untar(archive)`` and ``declare_minitask(task, path)`` name files that do not travel
as such: each worker makes them, once per node cache, from what they are made of (the
archive; the minitask's inputs), which are staged like any input. A :class:`Deriver` waits
until those are in the cache, takes the derived name's node-wide lock (a sibling worker that
holds it is making the same file: wait for its copy), and makes the file on a thread —
unpacking, or running the command in a sandbox of its own — so the worker's loop never
blocks. The result is moved into the cache under its name, like a fetched file.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import filetree
from kubevine.ids import CacheName
from kubevine.protocol import FileBinding, FileKind
from kubevine.worker.cache import Cache, dir_size
from kubevine.worker.core import parts_of
from kubevine.worker.states import DeriveState

log = logging.getLogger(__name__)

NODE_WAIT = 600.0  # seconds to wait for a file a sibling worker of this node is making
MINITASK_OUTPUT_TAIL = 2000  # characters of a failed minitask's output kept in the error


@dataclass
class Derivation:
    binding: FileBinding
    parts: list[CacheName]  # what it is made from
    state: DeriveState = DeriveState.WAITING
    deadline: float = 0.0
    box: Path | None = None
    dependents: int = 1
    errors: list[str] = field(default_factory=list)


class Deriver:
    def __init__(self, cache: Cache, scratch: Path, base_env: Mapping[str, str]) -> None:
        self.cache = cache
        self.scratch = scratch  # minitask sandboxes
        self.base_env = dict(base_env)
        self.jobs: dict[CacheName, Derivation] = {}
        self.made: list[CacheName] = []  # made here (the manager learns of a new replica)
        self.found: list[CacheName] = []  # made by a sibling worker of this node
        self.failed: list[tuple[CacheName, str]] = []
        self._done: queue.SimpleQueue[tuple[CacheName, Path | None, str | None]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self._procs: dict[CacheName, subprocess.Popen[bytes]] = {}  # running minitasks
        self._guard = threading.Lock()  # _procs, _closed and the wake pipe, shared with threads
        self._closed = False

    def want(self, b: FileBinding) -> None:
        """Make ``b`` once its parts are in the cache (the caller stages them, pinned)."""
        assert b.cache_name is not None
        job = self.jobs.get(b.cache_name)
        if job is not None:
            job.dependents += 1
            return
        parts = [p.cache_name for p in parts_of(b) if p.cache_name is not None]
        self.jobs[b.cache_name] = Derivation(b, parts)

    def advance(self) -> None:
        """Start what can start: parts all here, and no sibling making it."""
        for name, job in list(self.jobs.items()):
            if job.state == DeriveState.MAKING:
                continue
            if self.cache.has(name) and self.cache.sound(name):
                del self.jobs[name]
                self.cache.adopt(name, job.binding.cache)
                self.found.append(name)
                continue
            if job.state == DeriveState.SIBLING and time.monotonic() > job.deadline:
                del self.jobs[name]
                self.failed.append((name, f"no copy appeared on this node in {NODE_WAIT:.0f}s"))
                continue
            if not all(self.cache.has(p) for p in job.parts):
                continue
            if not self.cache.try_lock(name):
                if job.state != DeriveState.SIBLING:
                    job.state, job.deadline = DeriveState.SIBLING, time.monotonic() + NODE_WAIT
                continue
            job.state = DeriveState.MAKING
            self._start(name, job)

    def _start(self, name: CacheName, job: Derivation) -> None:
        b = job.binding
        if b.kind == FileKind.UNTAR and b.source is not None and b.source.cache_name is not None:
            archive = self.cache.path(b.source.cache_name)
            threading.Thread(target=self._untar, args=(name, archive), daemon=True).start()
        elif b.kind == FileKind.MINITASK and b.mini is not None:
            box = self.scratch / f"mini-{os.getpid()}-{time.monotonic_ns()}"
            box.mkdir(parents=True)
            job.box = box
            try:
                for p in b.mini.inputs:
                    assert p.cache_name is not None
                    self.cache.link_into(p.cache_name, box / p.remote_name)
            except OSError as e:
                self._done.put((name, None, f"could not prepare the minitask's sandbox: {e}"))
                self._poke()
                return
            threading.Thread(target=self._run_mini, args=(name, box, b), daemon=True).start()
        else:
            self._done.put((name, None, f"{b.kind.value} files are not made on workers"))
            self._poke()

    def _untar(self, name: CacheName, archive: Path) -> None:
        dest = self.cache.root / f".{name}.{os.getpid()}.{time.monotonic_ns()}.untar"
        try:
            if archive.is_dir():
                raise tarfile.ReadError("the file to unpack is a directory, not an archive")
            filetree.unpack(archive, dest)
            self._done.put((name, dest, None))
        except Exception as e:  # any failure (EOFError, zlib.error, ...) fails the job
            shutil.rmtree(dest, ignore_errors=True)
            self._done.put((name, None, f"cannot unpack the archive: {type(e).__name__}: {e}"))
        self._poke()

    def _run_mini(self, name: CacheName, box: Path, b: FileBinding) -> None:
        assert b.mini is not None
        env = {**self.base_env, **b.mini.env}
        try:
            proc = subprocess.Popen(
                b.mini.command,
                shell=True,
                cwd=box,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._guard:
                self._procs[name] = proc
                if self._closed:  # closed while it started: it must not outlive the worker
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                stdout, _ = proc.communicate(timeout=b.mini.time_max)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started
                stdout, _ = proc.communicate()
                tail = stdout.decode(errors="replace")[-MINITASK_OUTPUT_TAIL:]
                self._done.put((name, None, f"the minitask ran longer than {b.mini.time_max:g}s:\n{tail}"))
                self._poke()
                return
            out = box / b.mini.output
            tail = stdout.decode(errors="replace")[-MINITASK_OUTPUT_TAIL:]
            if proc.returncode != 0:
                self._done.put((name, None, f"the minitask exited with code {proc.returncode}:\n{tail}"))
            elif not out.exists():
                self._done.put((name, None, f"the minitask did not produce {b.mini.output!r}:\n{tail}"))
            else:
                self._done.put((name, out, None))
        except Exception as e:  # the job must end, whatever went wrong
            self._done.put((name, None, f"the minitask could not run: {type(e).__name__}: {e}"))
        finally:
            with self._guard:
                self._procs.pop(name, None)
        self._poke()

    def _poke(self) -> None:
        with self._guard:
            if not self._closed:  # after close the pipe's fd may already be someone else's
                os.write(self._wake_w, b"x")

    def on_wake(self) -> list[CacheName]:
        """Finished derivations go into the cache; the names that evicted others to fit."""
        try:
            os.read(self.wake_r, 65536)
        except BlockingIOError:
            pass
        evicted: list[CacheName] = []
        while True:
            try:
                name, path, err = self._done.get_nowait()
            except queue.Empty:
                return evicted
            job = self.jobs.pop(name, None)
            if job is None:
                continue
            try:
                if err is None and path is not None:
                    try:
                        evicted += self.cache.evict_for(dir_size(path))
                        self.cache.put_path(name, path, job.binding.cache)
                    except OSError as e:  # e.g. the disk is full: the job fails, the worker lives
                        if path.is_dir():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            path.unlink(missing_ok=True)
                        log.warning("could not store %s: %s", name, e)
                        self.failed.append((name, f"could not store the made file in the cache: {e}"))
                        continue
                    self.made.append(name)
                else:
                    log.warning("making %s failed: %s", name, err)
                    self.failed.append((name, err or "failed"))
            finally:
                self.cache.unlock(name)
                if job.box is not None:
                    shutil.rmtree(job.box, ignore_errors=True)

    def part_failed(self, name: CacheName, why: str) -> None:
        """A part could not be had: what is made from it (and from that, ...) fails too."""
        bad = [(name, why)]
        while bad:
            part, reason = bad.pop()
            for n, job in list(self.jobs.items()):
                if part in job.parts and job.state != DeriveState.MAKING:
                    del self.jobs[n]
                    msg = f"{part} could not be had: {reason}"
                    self.failed.append((n, msg))
                    bad.append((n, msg))

    def take(self) -> tuple[list[CacheName], list[CacheName], list[tuple[CacheName, str]]]:
        out = (self.made, self.found, self.failed)
        self.made, self.found, self.failed = [], [], []
        return out

    def close(self) -> None:
        """Kill running minitasks (each in a session of its own) and close the wake pipe."""
        with self._guard:
            self._closed = True
            for proc in self._procs.values():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.close(self.wake_r)
            os.close(self._wake_w)
