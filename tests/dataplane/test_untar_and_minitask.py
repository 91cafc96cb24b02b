"""Files workers make themselves: ``declare_untar`` (an archive unpacked once per node cache)
and ``declare_minitask`` (a command's product, made once per node cache)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from kubevine import LocalCluster, Manager, Task, txformat
from kubevine.protocol import Outcome


def tarball(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def one_node(c: LocalCluster, tmp_path: Path, n: int) -> None:
    for _ in range(n):
        c.add_worker(cache_dir=str(tmp_path / "node-a"), node="a")
    c.wait_for_workers(n)


def inserts(c: LocalCluster, name: str) -> list[txformat.Event]:
    log = txformat.read(c.workdir / "manager" / "transactions.log")
    return [e for e in log if e.kind == "CACHE" and e.event == "insert" and e.get("file") == name]


def test_an_archive_is_unpacked_once_per_node_and_tasks_see_the_directory(tmp_path: Path) -> None:
    archive = tmp_path / "calib.tar.gz"
    archive.write_bytes(tarball({"calib/a.txt": b"alpha\n", "calib/sub/b.txt": b"beta\n"}))
    with LocalCluster(workers=0, workdir=tmp_path / "c") as c:
        one_node(c, tmp_path, 2)
        with Manager(c.address, token=c.token) as m:
            src = m.declare_file(archive)
            unpacked = m.declare_untar(src)
            assert m.declare_untar(m.declare_file(archive)).cache_name() == unpacked.cache_name()
            tasks = []
            for _ in range(6):
                t = Task("sleep 0.3; cat d/calib/a.txt d/calib/sub/b.txt")
                t.add_input(unpacked, "d")
                tasks.append(t)
                m.submit(t)
            for _ in tasks:
                assert m.wait(60) is not None
            assert all(t.successful() for t in tasks), [(t.outcome, t.error) for t in tasks]
            assert {t.output for t in tasks} == {"alpha\nbeta\n"}
            assert len({t.worker for t in tasks}) == 2
        assert len(inserts(c, unpacked.cache_name())) == 1  # unpacked once on the node
        node_cache = tmp_path / "node-a"
        assert [p.name for p in node_cache.iterdir() if p.name.startswith("untar-")] == [
            unpacked.cache_name()
        ]


def test_a_temp_archive_is_unpacked_and_a_bad_one_fails_its_consumer_clearly(tmp_path: Path) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        packed = m.declare_temp()
        make = Task("mkdir -p out/x && echo made > out/x/f && tar cjf out.tbz out")
        make.add_output(packed, "out.tbz")
        use = Task("cat tree/out/x/f")
        use.add_input(m.declare_untar(packed), "tree")
        junk = m.declare_buffer(b"this is not a tar archive")
        bad = Task("ls tree")
        bad.add_input(m.declare_untar(junk), "tree")
        for t in (make, use, bad):
            m.submit(t)
        assert {m.wait(60) for _ in range(3)} == {make, use, bad}
        assert use.successful() and use.output == "made\n", (use.outcome, use.error)
        assert bad.outcome == Outcome.INPUT_MISSING and "cannot unpack the archive" in (bad.error or "")
        after = Task("echo still fine")
        m.submit(after)
        assert m.wait(60) is after and after.successful()


def test_a_truncated_archive_fails_its_consumer_instead_of_hanging(tmp_path: Path) -> None:
    whole = tarball({"d/big.bin": bytes(range(256)) * 4000})
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        t = Task("ls tree")
        t.add_input(m.declare_untar(m.declare_buffer(whole[: len(whole) // 2])), "tree")
        m.submit(t)
        assert m.wait(60) is t  # before the fix: the unpacking thread died and this timed out
        assert t.outcome == Outcome.INPUT_MISSING and "cannot unpack the archive" in (t.error or ""), t.error
        after = Task("echo still fine")
        m.submit(after)
        assert m.wait(60) is after and after.successful()


def test_a_minitask_runs_once_per_node_and_its_product_is_an_input(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with LocalCluster(workers=0, workdir=tmp_path / "c") as c:
        one_node(c, tmp_path, 2)
        with Manager(c.address, token=c.token) as m:
            table = m.declare_buffer("3\n4\n5\n")
            maker = Task(f"echo run >> {runs}; awk '{{print $1*$1}}' table > squares")
            maker.add_input(table, "table")
            squares = m.declare_minitask(maker, "squares")
            same = Task(f"echo run >> {runs}; awk '{{print $1*$1}}' table > squares")
            same.add_input(m.declare_buffer("3\n4\n5\n"), "table")
            assert m.declare_minitask(same, "squares").cache_name() == squares.cache_name()
            other = Task(f"echo run >> {runs}; awk '{{print $1+$1}}' table > squares")
            other.add_input(table, "table")
            assert m.declare_minitask(other, "squares").cache_name() != squares.cache_name()
            tasks = []
            for _ in range(6):
                t = Task("sleep 0.3; paste -sd+ sq | bc")
                t.add_input(squares, "sq")
                tasks.append(t)
                m.submit(t)
            for _ in tasks:
                assert m.wait(60) is not None
            assert all(t.successful() for t in tasks), [(t.outcome, t.error) for t in tasks]
            assert {t.output for t in tasks} == {"50\n"}
            assert len({t.worker for t in tasks}) == 2
            assert m.fetch_bytes(squares) == b"9\n16\n25\n"
            broken = m.declare_minitask(Task("echo oops; exit 3"), "nothing")
            t = Task("cat nothing")
            t.add_input(broken, "nothing")
            m.submit(t)
            assert m.wait(60) is t and t.outcome == Outcome.INPUT_MISSING
            assert "exited with code 3" in (t.error or "") and "oops" in (t.error or "")
            hung = m.declare_minitask(Task("sleep 60 && echo late > x", time_max=1), "x")
            t = Task("cat x")
            t.add_input(hung, "x")
            m.submit(t)
            assert m.wait(30) is t and t.outcome == Outcome.INPUT_MISSING
            assert "ran longer than 1s" in (t.error or "")
        assert runs.read_text() == "run\n"  # made once for the node's two workers
        assert len(inserts(c, squares.cache_name())) == 1


def test_files_made_from_files_made_on_the_worker(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tools.tar").write_bytes(tarball({"bin/tool.sh": b"echo tool ran\n"}, mode="w"))
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, Manager(c.address, token=c.token) as m:
        tools = m.declare_untar(m.declare_url(f"file://{site / 'tools.tar'}"))  # an archive at a URL
        build = Task("mkdir -p out/data && sh tools/bin/tool.sh > out/log && seq 3 > out/data/n")
        build.add_input(tools, "tools")
        built = m.declare_minitask(build, "out")  # a directory made by a minitask
        packer = Task("tar czf built.tgz -C built .")
        packer.add_input(built, "built")
        repacked = m.declare_untar(m.declare_minitask(packer, "built.tgz"))  # and unpacked again
        t = Task("cat b/log t/log; cat r/data/n")
        t.add_input(built, "b")
        t.add_input(tools, "t0")
        t.add_input(repacked, "r")
        t.add_input(m.declare_buffer("echo direct\n"), "t/log")
        m.submit(t)
        assert m.wait(60) is t and t.successful(), (t.outcome, t.error)
        assert t.output == "tool ran\necho direct\n1\n2\n3\n"
        assert m.fetch_file(built, tmp_path / "built").joinpath("data", "n").read_text() == "1\n2\n3\n"
