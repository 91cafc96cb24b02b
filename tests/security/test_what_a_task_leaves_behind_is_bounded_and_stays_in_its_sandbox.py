"""What a task leaves in its sandbox is not trusted: outputs that are links out of the sandbox
are refused with the reason (and the task fails with output_missing), an output too large for a
message stays in the worker's cache (spilled) instead of travelling, a gigabyte of stdout costs
neither memory nor disk, and the worker's files are its user's alone. Played against a real
worker by a manager the test drives (every message the worker sends is looked at)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from kubevine import results
from kubevine.chunks import INLINE_MAX
from kubevine.digest import sha256_bytes
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    MAX_MESSAGE,
    Assignment,
    FileBinding,
    FileKind,
    FileSource,
    Outcome,
    StageIn,
    TaskKind,
    TaskSpec,
)
from kubevine.resources import Resources

from .fakemanager import FakeManager
from .ownworker import OwnWorker


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeManager, OwnWorker]]:
    fm = FakeManager()
    w = OwnWorker((fm.address, fm.token), tmp_path / "w")
    fm.until(lambda: fm.ident is not None, 30, "the worker's hello")
    yield fm, w
    w.stop()
    fm.close()


def task(tid: int, command: str, outputs: Sequence[FileBinding] = (), **kw: Any) -> Assignment:
    kw.setdefault("resources", Resources(cores=1))
    spec = TaskSpec(id=TaskId(tid), command=command, outputs=list(outputs), **kw)
    return Assignment(spec=spec, attempt=1)


def to_client(name: str = "out") -> FileBinding:
    return FileBinding(remote_name=name, kind=FileKind.LOCAL, to_client=True)


def temp(name: str = "out") -> FileBinding:
    cache_name = CacheName("temp-" + hashlib.sha256(name.encode()).hexdigest())
    return FileBinding(remote_name=name, kind=FileKind.TEMP, cache_name=cache_name)


def test_an_output_that_is_a_link_out_of_the_sandbox_is_refused_at_once(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, _ = fake
    t0 = time.monotonic()
    fm.dispatch([task(1, "ln -s /usr/share out", [to_client()]), task(2, "ln -s /etc/hosts out", [temp()])])
    for tid in (1, 2):
        res, _ = fm.result(tid)
        assert res.outcome == Outcome.OUTPUT_MISSING, res
        assert res.error and "symbolic link" in res.error
        assert not res.outputs
    assert time.monotonic() - t0 < 10  # (following /usr/share blocked a worker for 23 s)
    assert not any(u.cached for u, _ in fm.updates)  # nothing of /etc went into its cache


def test_links_inside_a_directory_output_are_kept_only_if_they_point_inside_it(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, _ = fake
    fm.dispatch(
        [
            task(1, "mkdir d && echo hi > d/a && ln -s a d/b", [to_client("d")]),
            task(2, "mkdir d && echo hi > d/a && ln -s /etc/passwd d/b", [to_client("d")]),
            task(3, "ln -s /etc y", [to_client("y/hostname")]),
        ]
    )
    res, frames = fm.result(1)
    assert res.outcome == Outcome.SUCCESS, res
    (out,) = res.outputs
    assert out.directory and out.frame is not None
    with tarfile.open(fileobj=BytesIO(frames[out.frame])) as tar:
        link = tar.getmember("b")
        assert link.issym() and link.linkname == "a"
    res, _ = fm.result(2)
    assert res.outcome == Outcome.OUTPUT_MISSING and res.error and "link out of the output" in res.error, res
    res, _ = fm.result(3)
    assert res.outcome == Outcome.OUTPUT_MISSING and res.error and "under a symbolic link" in res.error, res


def test_outputs_and_results_too_large_for_a_message_stay_in_the_cache(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, w = fake
    size = INLINE_MAX + (4 << 20)
    command = f"head -c {size} /dev/urandom > out && cp out copy"
    fm.dispatch([task(1, command, [to_client(), to_client("copy")])])
    res, frames = fm.result(1)
    assert res.outcome == Outcome.SUCCESS, res
    assert all(len(f) <= INLINE_MAX for f in frames)
    assert fm.largest_message < MAX_MESSAGE
    spilled = [o for o in res.outputs if o.spilled]
    assert len(spilled) == 2 and all(o.size == size and o.cache_name for o in spilled)
    name = spilled[0].cache_name
    assert name is not None and name == spilled[1].cache_name  # same content, one copy
    cached = w.workdir / "cache" / name
    assert sha256_bytes(cached.read_bytes()) == name.removeprefix("spill-")
    fm.until(lambda: any(name in u.cached for u, _ in fm.updates), 10, "the spill announced as cached")

    # a PythonTask whose value is larger than a message
    def big() -> bytes:
        return b"x" * (INLINE_MAX + 1000)

    payload = cloudpickle.dumps((big, (), {}, None))
    spec = TaskSpec(id=TaskId(2), kind=TaskKind.PYTHON, resources=Resources(cores=1))
    fm.dispatch([Assignment(spec=spec, attempt=1, payload=0)], [payload])
    res, frames = fm.result(2)
    assert res.outcome == Outcome.SUCCESS and res.output_spill and res.output_frame is None, res
    kept = (w.workdir / "cache" / res.output_spill).read_bytes()
    assert results.decode_result(kept) == big()
    fm.until(lambda: any(res.output_spill in u.cached for u, _ in fm.updates), 10, "the spill announced")


def test_a_gigabyte_of_stdout_is_cut_as_it_is_written(fake: tuple[FakeManager, OwnWorker]) -> None:
    fm, w = fake
    before = w.rss()
    fm.dispatch([task(1, "head -c 1000000000 /dev/zero; echo done >&2")])
    peak_disk = 0
    while 1 not in fm.results:
        fm.pump(0.05)
        out = subprocess.run(["du", "-sb", str(w.workdir)], capture_output=True, text=True).stdout
        peak_disk = max(peak_disk, int(out.split()[0] or 0))
    res, frames = fm.results[1]
    assert res.outcome == Outcome.SUCCESS and res.exit_code == 0
    assert res.output_frame is not None
    stdout = frames[res.output_frame]
    assert len(stdout) < (1 << 20) + 200 and b"truncated at 1048576 of 1000000005 bytes" in stdout
    assert peak_disk < 50 << 20, f"{peak_disk >> 20} MB on disk"
    assert w.rss() - before < 100 << 20


def test_the_workers_files_are_its_users_alone(fake: tuple[FakeManager, OwnWorker]) -> None:
    fm, w = fake
    data = b"#!/bin/sh\necho ran\n"
    name = CacheName("buf-" + sha256_bytes(data))
    fm.files[name] = data
    script = FileBinding(cache_name=name, remote_name="x", kind=FileKind.BUFFER)
    stage = StageIn(cache_name=name, sources=[FileSource(kind="manager")])
    a = task(1, "./x && stat -c %a . x", inputs=[script])
    fm.dispatch([a.model_copy(update={"stage": [stage]})])
    res, frames = fm.result(1)
    assert res.outcome == Outcome.SUCCESS, (res, frames)
    out = frames[0].decode().split()
    assert out[0] == "ran" and out[1] == "700"  # the sandbox
    assert int(out[2], 8) & 0o100  # a buffer can be run as ./x (TaskVine: 0755; only the owner's bits here)
    for p in [w.workdir, w.workdir / "cache", w.workdir / "cache" / name, w.workdir / "sandboxes"]:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode & 0o077 == 0, f"{p} is {mode:o}"
