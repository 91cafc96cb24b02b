"""The worker's Deriver (real cache on disk, real threads): a made file that cannot be stored
fails its job and frees the node lock instead of raising into the worker's loop."""

from __future__ import annotations

import io
import os
import select
import tarfile
from pathlib import Path

from kubevine.ids import CacheName
from kubevine.protocol import FileBinding, FileKind, MiniTaskSpec
from kubevine.testing import wait_for
from kubevine.worker.cache import Cache
from kubevine.worker.derive import Deriver


def archive_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("d/f.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buf.getvalue()


def test_an_error_storing_the_made_file_fails_the_job_and_frees_the_lock(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    d = Deriver(cache, tmp_path / "scratch", {})
    try:
        cache.put_bytes(CacheName("buf-archive"), archive_bytes())
        name = CacheName("untar-x")
        src = FileBinding(cache_name=CacheName("buf-archive"), remote_name="a", kind=FileKind.BUFFER)
        d.want(FileBinding(cache_name=name, remote_name="t", kind=FileKind.UNTAR, source=src))
        # The entry's name is taken by something the unpacked tree cannot replace (a dangling
        # symlink: renaming a directory onto it fails with an OSError, as a full disk would).
        cache.path(name).symlink_to(tmp_path / "nowhere")
        d.advance()
        assert select.select([d.wake_r], [], [], 30)[0], "the unpacking thread never reported"
        assert d.on_wake() == []  # before the fix: the OSError escaped into the worker's loop
        made, _, failed = d.take()
        assert made == [] and [n for n, _ in failed] == [name]
        assert "could not store the made file" in failed[0][1]
        assert cache.try_lock(name)  # the node lock was released
        cache.unlock(name)
    finally:
        d.close()
        cache.close()


def test_closing_kills_a_running_minitask(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    d = Deriver(cache, tmp_path / "scratch", {})
    name = CacheName("mini-x")
    mini = MiniTaskSpec(command="echo $$ > pid; sleep 120; echo late > out", output="out")
    d.want(FileBinding(cache_name=name, remote_name="o", kind=FileKind.MINITASK, mini=mini))
    d.advance()
    box = d.jobs[name].box
    assert box is not None
    pid = int(wait_for(lambda: (box / "pid").exists() and (box / "pid").read_text().strip(), what="pid"))
    d.close()  # before the fix: the minitask ran on for two minutes after its worker closed

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=20, what="the minitask to be killed")
    cache.close()
