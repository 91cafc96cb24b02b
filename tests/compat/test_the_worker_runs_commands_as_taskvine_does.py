"""TaskVine's meanings for what a worker does with a command, checked on a real worker driven
by a manager the test plays (so each AttemptResult is seen as the worker sends it): exit codes
126/127 for a command that cannot be run, input modes (buffers executable, a set mode applied
to the task's copy only, mount_symlink), the end time, environments, measured resources."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from security.fakemanager import FakeManager  # (tests/ is on the path: both tiers are packages in it)
from security.ownworker import OwnWorker

from kubevine.digest import sha256_bytes
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    Assignment,
    AttemptResult,
    FileBinding,
    FileKind,
    FileSource,
    Outcome,
    StageIn,
    TaskSpec,
)
from kubevine.resources import Resources


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeManager, OwnWorker]]:
    fm = FakeManager()
    w = OwnWorker((fm.address, fm.token), tmp_path / "w")
    fm.until(lambda: fm.ident is not None, 30, "the worker's hello")
    yield fm, w
    w.stop()
    fm.close()


def buffer(fm: FakeManager, data: bytes, remote: str, **kw: Any) -> tuple[FileBinding, StageIn]:
    name = CacheName("buf-" + sha256_bytes(data))
    fm.files[name] = data
    b = FileBinding(cache_name=name, remote_name=remote, kind=kw.pop("kind", FileKind.BUFFER), **kw)
    return b, StageIn(cache_name=name, sources=[FileSource(kind="manager")])


def run(
    fm: FakeManager, tid: int, command: str, files: Sequence[tuple[FileBinding, StageIn]] = (), **kw: Any
) -> tuple[AttemptResult, str]:
    spec = TaskSpec(
        id=TaskId(tid), command=command, inputs=[b for b, _ in files], resources=Resources(cores=1), **kw
    )
    fm.dispatch([Assignment(spec=spec, attempt=1, stage=[s for _, s in files])])
    res, frames = fm.result(tid)
    out = frames[res.output_frame].decode(errors="replace") if res.output_frame is not None else ""
    return res, out


SCRIPT = b"#!/bin/sh\necho ran\n"


def test_a_command_that_cannot_be_run_exits_126_and_one_not_found_127(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, _ = fake
    res, out = run(fm, 1, "./x", [buffer(fm, SCRIPT, "x", mode=0o644)])
    assert (res.outcome, res.exit_code) == (Outcome.EXIT_NONZERO, 126), (res, out)  # TaskVine: "success"
    assert "ermission denied" in out
    res, out = run(fm, 2, "no-such-command-here --flag")
    assert (res.outcome, res.exit_code) == (Outcome.EXIT_NONZERO, 127), (res, out)
    assert "not found" in out


def test_buffers_run_as_scripts_and_a_set_mode_applies_to_the_tasks_copy_only(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, w = fake
    res, out = run(fm, 1, "./x", [buffer(fm, SCRIPT, "x")])
    assert res.outcome == Outcome.SUCCESS and out == "ran\n", (res, out)  # 0755 in TaskVine
    res, out = run(fm, 2, "stat -c %a x", [buffer(fm, SCRIPT, "x", mode=0o640)])
    assert out.strip() == "640", out
    cached = w.workdir / "cache" / ("buf-" + sha256_bytes(SCRIPT))
    assert os.stat(cached).st_mode & 0o700 == 0o700  # the shared copy is untouched
    res, out = run(fm, 3, "./x", [buffer(fm, SCRIPT, "x")])
    assert out == "ran\n"


def test_an_input_mounted_as_a_symlink_points_into_the_cache(fake: tuple[FakeManager, OwnWorker]) -> None:
    fm, w = fake
    res, out = run(
        fm, 1, "test -L data && readlink data && cat data", [buffer(fm, b"hello\n", "data", symlink=True)]
    )
    assert res.outcome == Outcome.SUCCESS, (res, out)
    target, content = out.splitlines()
    assert Path(target).parent == (w.workdir / "cache").resolve() and content == "hello"


def test_a_task_still_running_at_its_end_time_is_ended_with_max_end_time(
    fake: tuple[FakeManager, OwnWorker],
) -> None:
    fm, _ = fake
    t0 = time.monotonic()
    res, _ = run(fm, 1, "sleep 60", time_end=time.time() + 1.5)
    assert res.outcome == Outcome.MAX_END_TIME, res
    assert time.monotonic() - t0 < 20
    res, _ = run(fm, 2, "true", time_end=time.time() - 1)  # already past: not run
    assert res.outcome == Outcome.MAX_END_TIME


def _env_tarball(with_wrapper: bool) -> bytes:
    buf = io.BytesIO()
    files = {"bin/mytool": b"#!/bin/sh\necho tool from the environment\n"}
    if with_wrapper:
        files["bin/run_in_env"] = b'#!/bin/sh\nexport IN_ENV=yes\nexec "$@"\n'
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("with_wrapper", [True, False])
def test_a_command_runs_inside_its_environment(
    fake: tuple[FakeManager, OwnWorker], with_wrapper: bool
) -> None:
    fm, _ = fake
    archive, stage = buffer(fm, _env_tarball(with_wrapper), "env.tar.gz", kind=FileKind.LOCAL)
    env = FileBinding(
        cache_name=CacheName(
            "untar-" + sha256_bytes(archive.cache_name.encode() if archive.cache_name else b"")
        ),
        remote_name="env",
        kind=FileKind.UNTAR,
        source=archive,
    )
    res, out = run(fm, 1, "mytool; echo in env: ${IN_ENV:-no}", [(env, stage)], environments=["env"])
    assert res.outcome == Outcome.SUCCESS, (res, out)
    assert out.splitlines() == ["tool from the environment", f"in env: {'yes' if with_wrapper else 'no'}"]


def test_what_an_attempt_used_is_measured(fake: tuple[FakeManager, OwnWorker]) -> None:
    fm, _ = fake
    command = (
        "python3 -c 'b = bytearray(150 << 20); import time; time.sleep(1.2)' && head -c 3000000 /dev/zero > f"
    )
    res, _ = run(fm, 1, command)
    m = res.resources_measured
    assert res.outcome == Outcome.SUCCESS and m is not None, res
    assert 140 <= m.memory < 400, m
    assert m.cpu_time > 0.01 and 1.2 <= m.wall_time < 30, m
    assert m.disk >= 3, m


def test_a_watched_output_comes_back_while_the_task_runs(fake: tuple[FakeManager, OwnWorker]) -> None:
    fm, _ = fake
    log = FileBinding(remote_name="log", kind=FileKind.LOCAL, to_client=True, watch=True)
    command = "for i in 1 2 3 4; do echo line $i >> log; sleep 0.6; done"
    spec = TaskSpec(id=TaskId(1), command=command, outputs=[log], resources=Resources(cores=1))
    fm.dispatch([Assignment(spec=spec, attempt=1)])
    res, frames = fm.result(1)
    assert res.outcome == Outcome.SUCCESS, res
    pieces = [(p, fr[p.frame]) for u, fr in fm.updates for p in u.watched]
    before_end = [p for u, _ in fm.updates if not u.results for p in u.watched]
    assert len(before_end) >= 2  # it grew, and was sent, while the task ran
    assert all(p.task_id == 1 and p.remote_name == "log" for p, _ in pieces)
    content = bytearray()
    for p, data in sorted(pieces, key=lambda x: x[0].offset):
        assert p.offset == len(content)  # appended pieces, none missing, none twice
        content += data
    (out,) = res.outputs
    assert out.frame is not None and frames[out.frame].startswith(bytes(content))
    assert frames[out.frame] == b"".join(f"line {i}\n".encode() for i in range(1, 5))
