"""The task processes a worker runs: started in sandboxes, watched, reaped, judged.

Part of the worker's I/O shell (:mod:`kubevine.worker.service` owns the loop). Each running
process is watched through a pidfd and its stdout FIFO, both polled by the loop; when it exits
it is reaped at once (with its resource usage) and judged — inline when that is quick, on the
:class:`~kubevine.worker.outputs.Collector` thread when it has outputs to walk or a large
result. Whatever ended comes back as a :class:`~kubevine.worker.events.ProcessExited` for the
core, its temps and spills already moved into the cache.

Inputs are placed in the sandbox as the task asked: a hard link to the cache copy (the
default), a symbolic link into the cache (``mount_symlink``), or a copy with the mode the task
asked for when it differs from the cache copy's (the shared copy is never chmod'ed). A task
that runs in environments (``TaskSpec.environments``, unpacked inputs) gets
``<env>/bin/run_in_env`` around its command when the environment has one, else ``<env>/bin``
first on ``PATH``; a PythonTask in an environment runs with its ``bin/python``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import zmq

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import MAX_PIECE, Assignment, AttemptResult, FileBinding, Outcome, TaskKind
from kubevine.worker import events as ev
from kubevine.worker import outputs, sandbox
from kubevine.worker.cache import Cache
from kubevine.worker.core import wanted_mode
from kubevine.worker.pystarter import Starter

log = logging.getLogger(__name__)

WATCH_EVERY = 0.5  # seconds between looks at watched outputs
WATCH_BYTES = 4 << 20  # bytes of watched outputs sent per look at most


class Processes:
    def __init__(
        self,
        cache: Cache,
        sandboxes: sandbox.Sandboxes,
        poller: zmq.Poller,
        base_env: Mapping[str, str],
        starter: Starter | None,
        stdout_cap: int,
        output_limit: int,
    ) -> None:
        self.cache = cache
        self.sandboxes = sandboxes
        self.poller = poller
        self.base_env = base_env
        self.starter = starter
        self.cap = stdout_cap
        self.by_fd: dict[int, sandbox.Attempt] = {}  # running processes by pidfd
        self.by_out: dict[int, sandbox.Attempt] = {}  # ... by their stdout FIFO
        self.attempts: dict[tuple[TaskId, int], sandbox.Attempt] = {}  # every attempt here
        self.collector = outputs.Collector(stdout_cap, output_limit)
        self.watching: list[sandbox.Attempt] = []  # running attempts with watched outputs
        self.next_watch = 0.0
        poller.register(self.collector.wake_r, zmq.POLLIN)

    # ------------------------------------------------------------------ start

    def start(self, a: Assignment, payload: bytes) -> ev.ProcessExited | None:
        """Start the attempt's process; an event only if it could not start."""
        att = sandbox.Attempt(a, self.sandboxes.take())
        self.attempts[(a.spec.id, a.attempt)] = att
        made = {str(att.sandbox)}
        try:
            for b in a.spec.inputs:
                self._place(b, att.sandbox / b.remote_name, made)
                if b.symlink and b.cache_name is not None:  # the task may write there (TaskVine)
                    att.mounted.append(os.path.realpath(self.cache.path(b.cache_name)))
        except OSError as e:
            return self._exited(
                att, att.result(Outcome.SANDBOX_ERROR, error=f"could not prepare the sandbox: {e}")
            )
        if a.spec.time_end is not None and a.spec.time_end <= time.time():
            why = f"its end time ({a.spec.time_end}) had passed when it was to start"
            return self._exited(att, att.result(Outcome.MAX_END_TIME, error=why))
        env, python, wrap = _environment(att.sandbox, a.spec.environments, self.base_env)
        if a.spec.kind == TaskKind.PYTHON:
            failed = sandbox.start_python(att, env, payload, self.starter, python)
        elif wrap is not None:  # the whole command runs inside the environment's wrapper
            failed = sandbox.start_command(att, env, argv=[wrap, "/bin/sh", "-c", a.spec.command or ""])
        else:
            failed = sandbox.start_command(att, env)
        if failed is not None:
            return self._exited(att, failed)
        assert att.pidfd is not None and att.out_fd is not None
        att.watched = {b.remote_name: 0 for b in a.spec.outputs if b.watch}
        if att.watched:
            self.watching.append(att)
        self.by_fd[att.pidfd] = att
        self.by_out[att.out_fd] = att
        self.poller.register(att.pidfd, zmq.POLLIN)
        self.poller.register(att.out_fd, zmq.POLLIN)
        return None

    def _place(self, b: FileBinding, dest: Path, made: set[str]) -> None:
        """An input in the sandbox: a link to the cache copy, or a copy with its own mode."""
        assert b.cache_name is not None
        src = self.cache.path(b.cache_name)
        parent = os.path.dirname(dest)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        self.cache.used(b.cache_name)
        if b.symlink:
            os.symlink(src, dest)
            return
        st = os.stat(src)
        if stat.S_ISDIR(st.st_mode):
            shutil.copytree(src, dest, symlinks=True)  # (a task writing into it must not change the cache)
            return
        mode = wanted_mode(b)
        if mode is None or (st.st_mode & 0o700) == (mode & 0o700):  # the owner's bits are what it sees
            try:
                os.link(src, dest)
                return
            except OSError:
                pass
        shutil.copyfile(src, dest)
        if mode is not None:
            os.chmod(dest, mode)

    # ------------------------------------------------------------------ while they run

    def on_events(self, events: Mapping[object, int]) -> list[ev.ProcessExited]:
        """Output to read, processes that exited, judgements done: the exits to report."""
        done: list[ev.ProcessExited] = []
        for fd in [fd for fd in events if isinstance(fd, int) and fd in self.by_out]:
            if sandbox.read_output(self.by_out[fd], self.cap):  # closed by every writer
                self.poller.unregister(fd)
                del self.by_out[fd]
        for fd in [fd for fd in events if isinstance(fd, int) and fd in self.by_fd]:
            att = self.by_fd.pop(fd)
            self.poller.unregister(fd)
            if att.out_fd is not None and self.by_out.pop(att.out_fd, None) is not None:
                self.poller.unregister(att.out_fd)
            try:
                sandbox.reap(att, self.cap)
                if outputs.needs_thread(att):
                    self.collector.submit(att)
                    continue
                j = outputs.judge(att, self.cap, self.collector.limit)
            except Exception as e:  # a bug of ours: report it, keep the worker alive
                log.exception("collecting task %s failed", att.assignment.spec.id)
                j = outputs.Judged(att.result(Outcome.SANDBOX_ERROR, error=repr(e)), [])
            done.append(self._kept(att, j))
        if self.collector.wake_r in events:
            done += [self._kept(att, j) for att, j in self.collector.take()]
        return done

    def _kept(self, att: sandbox.Attempt, j: outputs.Judged) -> ev.ProcessExited:
        """Temps and spills into the cache (a failure there: the output was not delivered)."""
        cached: list[CacheName] = []
        evicted: list[CacheName] = []
        res = j.result
        for name, path, level in j.keep:
            try:
                evicted += self.cache.evict_for(_size(path))
                self.cache.put_path(name, path, level)
                cached.append(name)
            except OSError as e:
                why = f"output could not be kept in the cache: {e}"
                res = res.model_copy(update={"outcome": Outcome.OUTPUT_MISSING, "error": why})
        return self._exited(att, res, j.frames, cached, evicted)

    def _exited(
        self,
        att: sandbox.Attempt,
        res: AttemptResult,
        frames: list[bytes] | None = None,
        cached: list[CacheName] | None = None,
        evicted: list[CacheName] | None = None,
    ) -> ev.ProcessExited:
        a = att.assignment
        self.attempts.pop((a.spec.id, a.attempt), None)
        sandbox.close_output(att)
        self.sandboxes.give_back(att.sandbox)
        return ev.ProcessExited(res, frames or [], cached or (), evicted or ())

    def kill(self, task_id: TaskId, attempt: int) -> None:
        att = self.attempts.get((task_id, attempt))
        if att is not None and att.proc is not None:  # (None once reaped: its pid is not ours)
            sandbox.kill_process(att.proc, att.pidfd)

    def watch(self) -> list[ev.OutputGrew]:
        """Kill what ran past its time limit; sample the peak memory of what runs; the new
        content of watched outputs (every WATCH_EVERY)."""
        now = time.perf_counter()
        for att in self.by_fd.values():
            if att.deadline is not None and now >= att.deadline and att.proc is not None:
                sandbox.kill_process(att.proc, att.pidfd)
            elif now >= att.next_sample:
                sandbox.sample_memory(att, now)
        if not self.watching or now < self.next_watch:
            return []
        self.next_watch = now + WATCH_EVERY
        grew: list[ev.OutputGrew] = []
        budget = WATCH_BYTES
        self.watching = [att for att in self.watching if att.proc is not None]  # (reaped: done)
        for att in self.watching:
            for name in att.watched:
                data = _grown(att.sandbox, name, att.watched[name], min(budget, MAX_PIECE))
                if data:
                    a = att.assignment
                    grew.append(ev.OutputGrew(a.spec.id, a.attempt, name, att.watched[name], data))
                    att.watched[name] += len(data)
                    budget -= len(data)
        return grew

    def next_deadline(self) -> float | None:
        """When :meth:`watch` has something to do next (perf_counter), if anything."""
        due = [att.deadline for att in self.by_fd.values() if att.deadline is not None]
        due += [att.next_sample for att in self.by_fd.values()]
        if self.watching:
            due.append(self.next_watch)
        return min(due) if due else None

    def close(self) -> None:
        for att in self.by_fd.values():
            if att.proc is not None:
                sandbox.kill_process(att.proc, att.pidfd)
                att.proc.wait()
            sandbox.close_output(att)
        self.collector.close()


def _environment(
    box: Path, envs: list[str], base_env: Mapping[str, str]
) -> tuple[Mapping[str, str], str | None, str | None]:
    """For a task in unpacked environments: its environment, the python it runs PythonTasks
    with, and the wrapper its command runs under (``<env>/bin/run_in_env``), if any."""
    if not envs:
        return base_env, None, None
    env = dict(base_env)
    python = wrap = None
    for name in envs:
        root = box / name
        bindir = root / "bin"
        env["PATH"] = f"{bindir}:{env.get('PATH', os.defpath)}"
        env.setdefault("CONDA_PREFIX", str(root))
        if (bindir / "run_in_env").exists() and wrap is None:
            wrap = str(bindir / "run_in_env")
        if (bindir / "python").exists() and python is None:
            python = str(bindir / "python")
    return env, python, wrap


def _grown(box: Path, name: str, offset: int, most: int) -> bytes:
    """What a watched output holds past ``offset`` (at most ``most`` bytes): never through a
    link, never outside the sandbox."""
    path = box / name
    if most <= 0 or not os.path.realpath(path.parent).startswith(os.path.realpath(box)):
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= offset:
            return b""
        return os.pread(fd, min(most, st.st_size - offset), offset)
    finally:
        os.close(fd)


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return p.stat().st_size
