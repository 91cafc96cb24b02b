"""Judging an attempt whose process has exited, and collecting its outputs, off the loop.

What a task leaves in its sandbox is not trusted: an output may be a symbolic link to anything
on the node, a directory of millions of files, or gigabytes. So collecting outputs runs on a
:class:`Collector` thread (the worker's loop goes on heartbeating and serving peers) and:

- never follows a link out of the sandbox: an output that is itself a symbolic link, or lies
  under one, is refused with the reason (except under an input the task was given as a link,
  ``mount_symlink``, into this worker's cache: TaskVine's tasks write there); inside a
  directory output a link is kept (as a link) only if it points inside that directory, else
  the output is refused;
- walks at most ``MAX_ENTRIES`` entries and ``limit`` bytes per output;
- sends back inline only what fits a message (:data:`kubevine.chunks.INLINE_MAX`); a larger
  output for the client, or a larger PythonTask result, is *spilled*: kept in the worker's cache
  under ``spill-<sha256>`` and reported with ``OutputFile(spilled=True)`` /
  ``AttemptResult.output_spill``, to be fetched from there in pieces;
- a declared output that cannot be delivered fails the attempt with ``output_missing`` (what
  TaskVine reports), naming each output and why.

Files that go into the cache (temps, spills) are only *named* here: the loop moves them in
(:class:`Judged.keep`), since the cache is the loop's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import filetree
from kubevine.chunks import INLINE_MAX
from kubevine.digest import sha256_file
from kubevine.ids import CacheName
from kubevine.protocol import (
    Assignment,
    AttemptResult,
    CacheLevel,
    FileBinding,
    FileKind,
    Outcome,
    OutputFile,
    TaskKind,
    replace,
    value_output,
)
from kubevine.worker.sandbox import Attempt, result_path

log = logging.getLogger(__name__)

MAX_ENTRIES = 100_000  # files, directories and links in one output directory
DISK_WALK = 10_000  # entries walked to measure a sandbox's disk use


class Refused(Exception):
    """An output that will not be delivered, and why."""


@dataclass
class Judged:
    """An attempt's result, its frames, and the files to move into the cache (name, path, level)."""

    result: AttemptResult
    frames: list[bytes]
    keep: list[tuple[CacheName, Path, CacheLevel]] = field(default_factory=list)


def needs_thread(att: Attempt) -> bool:
    """Whether judging ``att`` may take long (outputs to walk, a large result to read)."""
    spec = att.assignment.spec
    if spec.outputs:
        return True
    if spec.kind == TaskKind.PYTHON:
        try:
            return result_path(att).stat().st_size > INLINE_MAX
        except OSError:
            return False
    return False


def judge(att: Attempt, cap: int, limit: int) -> Judged:
    """How the attempt ended (its process reaped); ``limit``: bytes an output may have."""
    spec = att.assignment.spec
    code = att.exit_code if att.exit_code is not None else -1
    timed_out = att.deadline is not None and att.ended >= att.deadline
    if att.measured is not None:
        att.measured = replace(att.measured, disk=_disk_mb(att.sandbox))
    if spec.kind == TaskKind.PYTHON:
        return _judge_python(att, code, cap, timed_out, limit)
    frames = [att.stdout(cap)]
    att.frames = frames
    if timed_out and code != 0:
        return Judged(
            att.result(att.deadline_outcome, exit_code=code, output_frame=0, error=_late(att)), frames
        )
    j = Judged(att.result(Outcome.SUCCESS, exit_code=code, output_frame=0), frames)
    outputs, missing = collect(att, j, limit)
    if code != 0:
        outcome, err = Outcome.EXIT_NONZERO, f"exit code {code}"
    elif missing:
        outcome, err = Outcome.OUTPUT_MISSING, f"output(s) not delivered: {'; '.join(missing)}"
    else:
        outcome, err = Outcome.SUCCESS, None
    j.result = replace(j.result, outcome=outcome, error=err, outputs=outputs)
    if outcome != Outcome.SUCCESS:
        j.keep = []
    return j


def _late(att: Attempt) -> str:
    spec = att.assignment.spec
    if att.deadline_outcome == Outcome.MAX_END_TIME:
        return f"still running at its end time ({spec.time_end})"
    return f"ran longer than its time limit of {spec.time_max}s"


def _judge_python(att: Attempt, code: int, cap: int, timed_out: bool, limit: int) -> Judged:
    path = result_path(att)
    try:
        if timed_out:
            return Judged(att.result(att.deadline_outcome, exit_code=code, error=_late(att)), [])
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if not size:
            out = att.stdout(cap).decode(errors="replace")
            why = f"the Python process ended with code {code} before returning a result:\n{out[-2000:]}"
            return Judged(att.result(Outcome.SANDBOX_ERROR, exit_code=code, error=why), [])
        with open(path, "rb") as f:
            ok = f.read(1) == b"1"
            if size - 1 <= INLINE_MAX:
                frames, spill = [f.read()], None
            else:
                frames, spill = [], _spill_rest(f, path.with_name(path.name + ".spill"))
        if not ok:
            j = Judged(
                att.result(Outcome.EXCEPTION, exit_code=code, output_frame=0 if frames else None), frames
            )
        else:
            j = Judged(
                att.result(Outcome.SUCCESS, exit_code=code, output_frame=0 if frames else None), frames
            )
        att.frames = j.frames
        if spill is not None:
            j.keep.append((spill[0], spill[1], CacheLevel.WORKFLOW))
            j.result = replace(j.result, output_spill=spill[0])
        if ok:
            outputs, missing = collect(att, j, limit)
            if missing:
                why = f"output(s) not delivered: {'; '.join(missing)}"
                j.result = replace(j.result, outcome=Outcome.OUTPUT_MISSING, error=why, outputs=outputs)
            else:
                j.result = replace(j.result, outputs=outputs)
        return j
    finally:
        path.unlink(missing_ok=True)
        if att.payload_path is not None:
            att.payload_path.unlink(missing_ok=True)


def _spill_rest(f: object, dest: Path) -> tuple[CacheName, Path]:
    """The rest of an open file, copied to ``dest`` as it is hashed: its spill name."""
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        while chunk := f.read(1 << 20):  # type: ignore[attr-defined]
            h.update(chunk)
            out.write(chunk)
    return CacheName("spill-" + h.hexdigest()), dest


# ------------------------------------------------------------------ outputs


def collect(att: Attempt, j: Judged, limit: int) -> tuple[list[OutputFile], list[str]]:
    """The declared outputs found in the sandbox, and why each missing one is missing. Temps
    and spills are added to ``j.keep``; small outputs for the client to ``j.frames``."""
    outputs: list[OutputFile] = []
    missing: list[str] = []
    box = os.path.realpath(att.sandbox)
    # an input mounted as a link (mount_symlink) is a folder of the task's: what it writes there
    # is an output as in TaskVine. Only the cache folders linked in count (not where the link
    # points now: the task may have replaced it)
    for i, b in enumerate(att.assignment.spec.outputs):
        try:
            o = _one(att, j, b, [box, *att.mounted], limit, i)
        except Refused as e:
            missing.append(f"{b.remote_name}: {e}")
            continue
        except OSError as e:
            missing.append(f"{b.remote_name}: {e.strerror or e}")
            continue
        outputs.append(o)
    return outputs, missing


def judge_call(a: Assignment, box: Path, res: AttemptResult, frames: list[bytes], limit: int) -> Judged:
    """A function call's file outputs, which it wrote in its folder (its working directory,
    ``box``), collected as a command's are (TaskVine: a FunctionCall's ``add_output`` files come
    back like any task's). Its value stays frame 0; the return value kept as a temp output is
    not a file here (the loop keeps it)."""
    j = Judged(res, list(frames))
    if res.outcome != Outcome.SUCCESS:
        return j
    files = [b for b in a.spec.outputs if b is not value_output(a.spec.outputs)]
    att = Attempt(assignment=replace(a, spec=replace(a.spec, outputs=files)), sandbox=box)
    found, missing = collect(att, j, limit)
    if missing:
        why = f"output(s) not delivered: {'; '.join(missing)}"
        return Judged(replace(res, outcome=Outcome.OUTPUT_MISSING, error=why), list(frames))
    j.result = replace(res, outputs=[*res.outputs, *found])
    return j


def _one(att: Attempt, j: Judged, b: FileBinding, tops: list[str], limit: int, i: int) -> OutputFile:
    p = att.sandbox / b.remote_name
    try:
        st = p.lstat()
    except FileNotFoundError:
        raise Refused("not produced") from None
    if stat.S_ISLNK(st.st_mode):
        raise Refused(f"output {b.remote_name} is a symbolic link (to {os.readlink(p)!r}): not followed")
    if not any(_inside(os.path.realpath(p), top) for top in tops):
        raise Refused(f"output {b.remote_name} lies under a symbolic link out of the sandbox")
    is_dir = stat.S_ISDIR(st.st_mode)
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise Refused(f"output {b.remote_name} is not a regular file or a directory")
    size = _check_tree(p, limit) if is_dir else st.st_size
    if size > limit:
        raise Refused(f"output {b.remote_name} has {size} bytes, more than the {limit} allowed")
    if b.kind == FileKind.TEMP:  # stays on this worker: moved into the cache by the loop
        assert b.cache_name is not None
        checksum = filetree.tree_hash(p) if is_dir else sha256_file(p)
        j.keep.append((b.cache_name, p, b.cache))
        return OutputFile(remote_name=b.remote_name, cache_name=b.cache_name, size=size, checksum=checksum)
    o = OutputFile(remote_name=b.remote_name, size=size, directory=is_dir)
    if not b.to_client:
        return o
    if is_dir:
        tar = att.sandbox.with_name(f"{att.sandbox.name}.out{i}.tar")
        filetree.pack_to(p, tar)
        return _deliver(att, j, o, tar, temporary=True)
    return _deliver(att, j, o, p, temporary=False)


def _deliver(att: Attempt, j: Judged, o: OutputFile, path: Path, *, temporary: bool) -> OutputFile:
    """``path`` (a file, or a directory's tar) to the client: inline, or spilled to the cache."""
    size = path.stat().st_size
    if size <= INLINE_MAX:
        j.frames.append(path.read_bytes())
        if temporary:
            path.unlink()
        return replace(o, size=size, frame=len(j.frames) - 1)
    checksum = sha256_file(path)
    name = CacheName("spill-" + checksum)
    j.keep.append((name, path, CacheLevel.WORKFLOW))
    return replace(o, size=size, checksum=checksum, spilled=True, cache_name=name)


def _check_tree(root: Path, limit: int) -> int:
    """The bytes under ``root``, once it is known to hold only files, directories and links
    that point inside it, and at most MAX_ENTRIES of them; :class:`Refused` if not."""
    top = os.path.realpath(root)
    entries = size = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                entries += 1
                if entries > MAX_ENTRIES:
                    raise Refused(f"more than {MAX_ENTRIES} entries")
                if e.is_symlink():
                    target = os.path.realpath(e.path)
                    if not _inside(target, top):
                        rel = os.path.relpath(e.path, root)
                        raise Refused(f"{rel} is a link out of the output (to {os.readlink(e.path)!r})")
                elif e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    size += e.stat(follow_symlinks=False).st_size
                    if size > limit:
                        raise Refused(f"more than the {limit} bytes allowed")
                else:
                    raise Refused(f"{os.path.relpath(e.path, root)} is not a regular file")
    return size


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _disk_mb(box: Path) -> int:
    """The sandbox's size in MB (files' sizes; at most DISK_WALK entries looked at)."""
    total = seen = 0
    stack = [str(box)]
    while stack and seen < DISK_WALK:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    seen += 1
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return (total + (1 << 20) - 1) >> 20


# ------------------------------------------------------------------ the thread


class Collector:
    """Judges attempts on threads; the loop polls :attr:`wake_r` and takes what is done."""

    def __init__(self, cap: int, limit: int) -> None:
        self.cap, self.limit = cap, limit
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="kubevine-outputs")
        self.done: queue.SimpleQueue[tuple[Attempt, Judged]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self._guard = threading.Lock()
        self._closed = False
        self.pending = 0

    def submit(self, att: Attempt) -> None:
        self.pending += 1
        self.pool.submit(self._run, att)

    def _run(self, att: Attempt) -> None:
        try:
            j = judge(att, self.cap, self.limit)
        except Exception as e:  # a bug of ours: the attempt fails, the worker lives
            log.exception("judging task %s failed", att.assignment.spec.id)
            j = Judged(att.result(Outcome.SANDBOX_ERROR, error=f"collecting its outputs failed: {e!r}"), [])
        self.done.put((att, j))
        with self._guard:
            if not self._closed:
                os.write(self._wake_w, b"x")

    def take(self) -> list[tuple[Attempt, Judged]]:
        try:
            os.read(self.wake_r, 65536)
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                self.pending -= len(out)
                return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._guard:
            self._closed = True
            os.close(self.wake_r)
            os.close(self._wake_w)
