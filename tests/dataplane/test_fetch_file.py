"""``m.fetch_file``: the bytes of a file that only workers hold come back to the client —
from a worker's cache, through the manager, with no task run again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.testing import wait_for


def log_of(c: LocalCluster) -> list[txformat.Event]:
    return txformat.read(c.workdir / "manager" / "transactions.log")


def test_a_temp_comes_back_from_the_worker_that_holds_it_without_a_rerun(tmp_path: Path) -> None:
    with LocalCluster(workers=2, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        tmp = m.declare_temp()
        a = Task("seq 1 100000 > numbers")
        a.add_output(tmp, "numbers")
        m.submit(a)
        assert m.wait(60) is a and a.successful()
        expected = "".join(f"{i}\n" for i in range(1, 100001)).encode()
        assert m.fetch_bytes(tmp) == expected
        assert m.fetch_file(tmp, tmp_path / "out" / "numbers.txt") == tmp_path / "out" / "numbers.txt"
        assert (tmp_path / "out" / "numbers.txt").read_bytes() == expected
        buf = m.declare_buffer(b"kept by the client")
        assert m.fetch_bytes(buf) == b"kept by the client"
    events = log_of(c)
    ran = [e for e in events if e.kind == "TASK" and e.subject == str(a.id) and e.event == "running"]
    assert len(ran) == 1  # fetched, not made again
    fetched = [e for e in events if e.kind == "TRANSFER" and e.event == "fetched"]
    assert [(e.get("source"), e.get("peer"), int(e.num("bytes"))) for e in fetched] == [
        ("peer", a.worker, len(expected)),
        ("peer", a.worker, len(expected)),
    ]


def test_an_output_bound_to_a_local_path_is_there_and_fetch_file_reads_it(tmp_path: Path) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        out = m.declare_file(tmp_path / "result.txt")
        t = Task("echo 42 > r")
        t.add_output(out, "r")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            m.fetch_file(out)  # not produced yet
        m.submit(t)
        assert m.wait(60) is t and t.successful()
        assert m.fetch_bytes(out) == b"42\n"


def test_a_file_nobody_holds_is_a_clear_error(tmp_path: Path) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        with pytest.raises(ValueError, match="no producer yet"):
            m.fetch_file(m.declare_temp())  # never written by any submitted task
        tmp = m.declare_temp()
        slow = Task("sleep 30; echo late > f")
        slow.add_output(tmp, "f")
        m.submit(slow)
        with pytest.raises(
            FileNotFoundError, match=rf"task that makes it \({slow.id}\) is (ready|dispatched|running)"
        ):
            m.fetch_file(tmp)
        m.cancel_by_task_id(slow.id or 0)
        never = m.declare_url("http://127.0.0.1:9/never-fetched")
        with pytest.raises(FileNotFoundError, match="no worker holds file url-"):
            m.fetch_file(never)
        assert m.wait(30) is slow  # the manager and the client are still fine


def test_a_temp_whose_only_copy_was_lost_is_a_clear_error_not_a_rerun(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=2, workdir=tmp_path / "c", heartbeat_timeout=2.0) as c,
        Manager(c.address, token=c.token) as m,
    ):
        tmp = m.declare_temp()
        a = Task("echo once > f")
        a.add_output(tmp, "f")
        m.submit(a)
        assert m.wait(60) is a and a.successful()
        victim = next(p for p in c.workers if f"-{p.pid}-" in (a.worker or ""))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_for(lambda: len(m.status().workers) == 1, timeout=30, what="the worker to be declared lost")
        with pytest.raises(FileNotFoundError, match=rf"only copy was lost \(task {a.id} made it\)"):
            m.fetch_file(tmp)
    ran = [e for e in log_of(c) if e.kind == "TASK" and e.subject == str(a.id) and e.event == "running"]
    assert len(ran) == 1


def test_a_file_larger_than_a_piece_is_fetched_in_pieces_whole_and_in_order(tmp_path: Path) -> None:
    """A 5 MiB temp travels as pieces (each one message), and arrives whole, in memory or on disk."""
    from kubevine.digest import sha256_bytes

    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        tmp = m.declare_temp()
        t = Task('python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 20480)" > big')
        t.add_output(tmp, "big")
        m.submit(t)
        assert m.wait(60) is t and t.successful(), (t.result, t.error)
        expected = bytes(range(256)) * 20480
        asked = []
        ask = m._conn.ask_piece
        m._conn.ask_piece = lambda name, off, n, then: asked.append(off) or ask(name, off, n, then)  # type: ignore[method-assign]
        got = m.fetch_bytes(tmp)
        assert sorted(set(asked)) == [i << 20 for i in range(5)]  # five pieces of 1 MiB
        assert len(got) == len(expected) and sha256_bytes(got) == sha256_bytes(expected)
        path = m.fetch_bytes(tmp, tmp_path / "out" / "big")
        assert path.read_bytes() == expected
