"""Directories as inputs and outputs: shipped as a unit, named by what they hold, coming
back as directories, and moving peer to peer as temps."""

from __future__ import annotations

import os
from pathlib import Path

from kubevine import LocalCluster, Manager, Task, txformat


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    (root / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(100_000))
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho ran from $(basename $(pwd))\n")
    script.chmod(0o755)


def listing(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_a_directory_input_arrives_whole_and_a_directory_output_comes_back(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        d = m.declare_file(src)
        assert d.cache_name().startswith("dir-")
        (tmp_path / "back").write_text("an old file where the directory will land\n")
        out = m.declare_file(tmp_path / "back")
        t = Task(
            "cd tree && ./run.sh && find . | sort && cd .. && cp -r tree back && echo new > back/new.txt"
        )
        t.add_input(d, "tree")
        t.add_output(out, "back")
        m.submit(t)
        assert m.wait(60) is t and t.successful(), (t.outcome, t.error, t.output)
        assert t.output.splitlines()[0] == "ran from tree"  # the executable bit survived
        assert "./empty" in t.output and "./sub/deeper/c.bin" in t.output
        back = tmp_path / "back"
        assert back.is_dir()
        assert listing(back) == {**listing(src), "new.txt": b"new\n"}
        name = d.cache_name()
        (src / "sub" / "b.txt").write_text("changed\n")  # a changed tree is a new file, never stale
        d2 = m.declare_file(src)
        assert d2.cache_name() != name
        t2 = Task("cat tree/sub/b.txt")
        t2.add_input(d2, "tree")
        m.submit(t2)
        assert m.wait(60) is t2 and t2.output == "changed\n"


def test_a_directory_temp_moves_peer_to_peer_as_a_unit_and_can_be_fetched(tmp_path: Path) -> None:
    with LocalCluster(workers=0, workdir=tmp_path / "c") as c:
        for node in ("a", "b"):
            c.add_worker(cache_dir=str(tmp_path / f"node-{node}"), node=node)
        c.wait_for_workers(2)
        with Manager(c.address, token=c.token) as m:
            tmp = m.declare_temp()
            make = Task("mkdir -p t/x && seq 1 1000 > t/x/n && echo top > t/top && mkdir t/empty")
            make.add_output(tmp, "t")
            m.submit(make)
            assert m.wait(60) is make and make.successful(), make.error
            readers = []
            for _ in range(2):  # two at once on two one-core workers: one is not the producer's
                r = Task("sleep 1; cat t/top; awk '{s+=$1} END {print s}' t/x/n; test -d t/empty && echo e")
                r.add_input(tmp, "t")
                readers.append(r)
                m.submit(r)
            assert {m.wait(60), m.wait(60)} == set(readers)
            assert [r.output for r in readers] == ["top\n500500\ne\n"] * 2
            assert {r.worker for r in readers} == {w.id for w in m.status().workers}
            got = m.fetch_file(tmp, tmp_path / "fetched")
            assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == [
                "empty",
                "top",
                "x",
                "x/n",
            ]
    sent = [
        e
        for e in txformat.read(c.workdir / "manager" / "transactions.log")
        if e.kind == "TRANSFER" and e.event == "sent" and e.subject == tmp.cache_name()
    ]
    assert [(e.get("source"), e.get("peer")) for e in sent] == [("peer", make.worker)]
    tree_bytes = sum(len(f"{i}\n") for i in range(1, 1001)) + len("top\n")
    assert int(sent[0].num("bytes")) == tree_bytes  # the whole tree, in one transfer


def test_a_task_writing_into_its_input_directory_leaves_the_cached_copy_intact(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "log.txt").write_text("original\n")
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        d = m.declare_file(src)
        writer = Task("echo tampered >> tree/sub/log.txt && cat tree/sub/log.txt")
        writer.add_input(d, "tree")
        m.submit(writer)
        assert m.wait(60) is writer and writer.successful(), (writer.result, writer.error)
        assert writer.output == "original\ntampered\n"
        reader = Task("cat tree/sub/log.txt")
        reader.add_input(d, "tree")
        m.submit(reader)
        assert m.wait(60) is reader and reader.successful(), (reader.result, reader.error)
        assert reader.output == "original\n"
