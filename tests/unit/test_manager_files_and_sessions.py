"""The manager's file and session bookkeeping, without sockets: uploads assembled and checked,
spools expiring, throttled warnings, sessions expiring, linear staging and waiting, and
spilled results passed through to the client."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest

from kubevine import filetree
from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.core import Core, Settings
from kubevine.manager.fetches import Fetches
from kubevine.manager.filestore import FileStore
from kubevine.manager.instructions import SendDispatch, SendForget, SendResults
from kubevine.manager.peerfetch import Fetched
from kubevine.manager.peers import Peers
from kubevine.manager.states import TaskState
from kubevine.manager.uploads import EXPIRE, Uploads
from kubevine.manager.wire import Throttle
from kubevine.protocol import (
    MAX_PIECE,
    AttemptResult,
    FetchFile,
    FileBinding,
    FileKind,
    Outcome,
    OutputFile,
    TaskRef,
    TaskSpec,
    WorkerInfo,
    _Msg,
)
from kubevine.resources import Resources

C = ClientId("c")
MB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def buf(data: bytes) -> CacheName:
    return CacheName("buf-" + hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------ uploads


def test_pieces_in_any_order_make_the_file_available_only_when_whole(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    up = Uploads(store)
    data = os.urandom(3 * MAX_PIECE + 5)
    name = buf(data)
    offsets = list(range(0, len(data), MAX_PIECE))
    for off in reversed(offsets[1:]):  # the first piece last: the hash is taken from disk
        assert up.piece(C, name, off, len(data), data[off : off + MAX_PIECE]) == (False, None)
        assert not store.has(name)
    assert up.piece(C, name, 0, len(data), data[:MAX_PIECE]) == (True, None)
    assert store.read(name, 0, len(data)) == data
    assert oct((tmp_path / "files" / name).stat().st_mode & 0o777) == "0o600"
    assert not up.active and not list(store.work_dir(".uploads").iterdir())


def test_an_upload_that_is_not_what_its_name_says_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    up = Uploads(store)
    data = os.urandom(MAX_PIECE + 1)
    name = buf(b"other")
    assert up.piece(C, name, 0, len(data), data[:MAX_PIECE]) == (False, None)
    whole, why = up.piece(C, name, MAX_PIECE, len(data), data[MAX_PIECE:])
    assert not whole and why is not None and "not what its name says" in why
    assert not store.has(name) and not list(store.work_dir(".uploads").iterdir())
    assert up.whole(buf(b"x"), b"y") is not None  # the whole-file form is checked too
    assert up.whole(CacheName("temp-abc"), b"y") is not None  # and only client names are taken
    assert up.whole(buf(b"x"), b"x") is None and store.has(buf(b"x"))


def test_a_directory_upload_is_checked_against_its_tree_hash(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    up = Uploads(store)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("a")
    (tree / "b").write_bytes(os.urandom(100))
    tar = filetree.pack(tree)
    good = CacheName("dir-" + filetree.tree_hash(tree))
    assert up.whole(CacheName("dir-" + "0" * 64), tar) is not None
    assert up.piece(C, good, 0, len(tar), tar) == (True, None)
    assert store.read(good, 0, len(tar)) == tar


def test_a_size_that_changes_mid_upload_and_a_silent_upload_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    store = FileStore(tmp_path / "files")
    up = Uploads(store, clock)
    data = os.urandom(2 * MAX_PIECE)
    name = buf(data)
    up.piece(C, name, 0, len(data), data[:MAX_PIECE])
    whole, why = up.piece(C, name, MAX_PIECE, len(data) + 1, data[MAX_PIECE:])
    assert not whole and why is not None and "size changed" in why
    up.piece(C, name, 0, len(data), data[:MAX_PIECE])
    clock.now += EXPIRE / 2
    assert up.expire() == []
    clock.now += EXPIRE
    ((gone, why),) = up.expire()
    assert gone == name and "stopped at" in why and not up.active


# ------------------------------------------------------------------ spools


class FakeFetcher:
    def __init__(self) -> None:
        self.asked: list[CacheName] = []
        self.finished: list[Fetched] = []

    def submit(self, name: CacheName, sources: object, checksum: object = None) -> None:
        self.asked.append(name)

    def done(self) -> list[Fetched]:
        out, self.finished = self.finished, []
        return out


def test_a_spooled_file_is_pulled_once_serves_every_piece_and_expires(tmp_path: Path) -> None:
    from kubevine.manager.fetches import SPOOL_TTL

    clock = Clock()
    store = FileStore(tmp_path / "files")
    fetcher = FakeFetcher()
    sent: list[tuple[bytes, _Msg, list[bytes]]] = []
    fetches = Fetches(store, fetcher, lambda i, m, f: sent.append((i, m, f)) or True, lambda *a: None, clock)  # type: ignore[arg-type]
    core = Core()
    w = WorkerInfo(
        worker_id=WorkerId("w"),
        node="n",
        host="h",
        pid=1,
        resources=Resources(cores=1),
        transfer_address="h:1",
    )
    core.worker_connected(w)
    name = CacheName("temp-x")
    core.catalog.add(name, WorkerId("w"), "n")
    data = os.urandom(MAX_PIECE + 10)
    for off in (0, MAX_PIECE):
        fetches.ask(core, b"c", C, FetchFile(request=off, cache_name=name, offset=off, length=MAX_PIECE))
    assert fetcher.asked == [name] and not sent  # one pull; both wait for it
    spool = store.work_dir(".spool") / "temp-x.1"
    spool.write_bytes(data)
    fetcher.finished = [Fetched(name, spool, False, len(data), None, WorkerId("w"), 0.1)]
    fetches.pulled()
    got = {m.offset: f[0] for _, m, f in sent}  # type: ignore[attr-defined]
    assert got[0] + got[MAX_PIECE] == data and all(m.total == len(data) for _, m, _ in sent)  # type: ignore[attr-defined]
    clock.now += SPOOL_TTL / 2
    fetches.ask(core, b"c", C, FetchFile(request=9, cache_name=name, length=MAX_PIECE))  # read again: kept
    clock.now += SPOOL_TTL / 2 + 1
    fetches.expire()
    assert spool.exists()
    clock.now += SPOOL_TTL + 1
    fetches.expire()
    assert not spool.exists() and not fetches.spools


# ------------------------------------------------------------------ throttling and sessions


def test_a_throttle_writes_one_line_per_address_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    t = Throttle(logging.getLogger("throttled"), 60.0, clock)
    with caplog.at_level(logging.WARNING, "throttled"):
        for _ in range(10_000):
            t.warning("10.0.0.1", "refused %s", "x")
        t.warning("10.0.0.2", "refused %s", "y")
        t.flush()
        t.flush()  # said once per interval
        clock.now += 61
        t.warning("10.0.0.1", "refused %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert "9999 more warning(s)" in lines[2] and "1 address" in lines[2]
    assert lines[3] == "refused x"  # the count was said by the flush


def test_silent_sessions_expire_and_goodbyes_end_them() -> None:
    peers = Peers()
    peers.bind(b"a", "admin", "s1", now=0.0)
    peers.bind(b"b", "client", "c1", now=0.0)
    peers.bind(b"w", "worker", "w1", now=0.0)
    peers.unwelcomed.add("c1")
    peers.by_ident[b"w"].heard = 29.0
    gone = peers.expire(now=31.0, timeout=30.0)
    assert sorted(p.id for p in gone) == ["c1", "s1"] and len(peers) == 1
    assert peers.route("worker", "w1") == b"w" and "c1" not in peers.unwelcomed


# ------------------------------------------------------------------ the core


def worker(core: Core, wid: str = "w") -> WorkerId:
    info = WorkerInfo(
        worker_id=WorkerId(wid),
        node="n",
        host="host-" + wid,
        pid=1,
        resources=Resources(cores=4, memory=1000, disk=1000),
        transfer_address=f"{wid}:5000",
    )
    core.worker_connected(info)
    return info.worker_id


def reads(tid: int, names: list[CacheName]) -> TaskSpec:
    inputs = [
        FileBinding(cache_name=n, remote_name=f"in{i}", kind=FileKind.BUFFER) for i, n in enumerate(names)
    ]
    return TaskSpec(id=TaskId(tid), command="true", inputs=inputs)


def test_a_task_waits_for_a_file_on_its_way_and_fails_if_it_never_comes() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    worker(core)
    a, b = CacheName("buf-a"), CacheName("buf-b")
    core.files_expected([a, b])
    core.submit(C, [reads(1, [a]), reads(2, [b]), reads(3, [CacheName("buf-never-sent")])], [None] * 3)
    core.schedule()
    _, out = core.take()
    assert core.tasks[TaskId(1)].state == core.tasks[TaskId(2)].state == TaskState.WAITING
    failed = {r.task_id: r for ins in out if isinstance(ins, SendResults) for r, _ in ins.results}
    assert failed[TaskId(3)].outcome == Outcome.INPUT_MISSING
    core.files_received([a])
    core.upload_failed(b, "its upload stopped")
    core.schedule()
    _, out = core.take()
    assert [t.spec.id for ins in out if isinstance(ins, SendDispatch) for t in ins.tasks] == [1]
    results = {r.task_id: r for ins in out if isinstance(ins, SendResults) for r, _ in ins.results}
    assert results[TaskId(2)].outcome == Outcome.INPUT_MISSING and "its upload stopped" in (
        results[TaskId(2)].error or ""
    )


def test_ten_thousand_inputs_are_waited_for_and_staged_in_linear_time() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    worker(core)
    names = [CacheName(f"buf-{i:064x}") for i in range(10_000)]
    core.files_expected(names)
    core.submit(C, [reads(1, names)], [None])
    t0 = time.perf_counter()
    for n in names:  # each arrival on its own (pieces finishing one by one)
        core.files_received([n])
    waited = time.perf_counter() - t0
    t0 = time.perf_counter()
    core.schedule()
    _, out = core.take()
    staged = time.perf_counter() - t0
    (dispatch,) = [ins for ins in out if isinstance(ins, SendDispatch)]
    assert len(dispatch.tasks[0].stage) == 10_000
    print(f"10,000 arrivals {waited * 1000:.0f} ms; staging 10,000 inputs {staged * 1000:.0f} ms")
    assert waited < 1.0 and staged < 2.0  # quadratic work took 8-34 s


def test_a_spilled_result_goes_to_the_client_stays_in_the_catalog_and_goes_when_undeclared() -> None:
    core = Core(Settings(prefetch=0))
    core.client_connected(C)
    wid = worker(core)
    core.submit(C, [TaskSpec(id=TaskId(1), command="big")], [None])
    core.schedule()
    core.take()
    spill, out_spill = CacheName("spill-" + "a" * 64), CacheName("spill-" + "b" * 64)
    result = AttemptResult(
        task_id=TaskId(1),
        attempt=1,
        outcome=Outcome.SUCCESS,
        exit_code=0,
        output_spill=spill,
        outputs=[OutputFile(remote_name="out", cache_name=out_spill, size=9 << 20, spilled=True)],
    )
    core.worker_update(wid, [TaskRef(task_id=TaskId(1), attempt=1)], [result], [])
    _, out = core.take()
    ((r, _),) = [x for ins in out if isinstance(ins, SendResults) for x in ins.results]
    assert r.output_spill == spill and r.outputs[0].spilled and r.outputs[0].cache_name == out_spill
    assert r.host == "host-w" and r.addrport == "w:5000"
    assert core.catalog.holders[spill] == {wid} and core.catalog.holders[out_spill] == {wid}
    core.results_acked(C, [TaskId(1)])
    assert spill in core.catalog.holders  # the result is collected; the spill stays until undeclared
    core.undeclare(C, [spill, out_spill])
    _, out = core.take()
    forget = [ins for ins in out if isinstance(ins, SendForget)]
    assert forget and set(forget[0].names) == {spill, out_spill} and spill not in core.catalog.holders
