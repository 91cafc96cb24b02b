"""Files in pieces: a piece source, a sink that takes pieces in any order, a puller that keeps
a window and asks again after a silence, and the peer wire that checks the proof first."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kubevine import chunks, filetree
from kubevine.digest import sha256_bytes, sha256_file
from kubevine.ids import CacheName
from kubevine.protocol import ProtocolError

PROOF = b"p" * 32


def _pull(
    src: chunks.Source, sink_dir: Path, chunk: int, shuffle: random.Random | None = None
) -> chunks.Sink:
    """Move a whole file from ``src`` the way a fetcher does, pieces answered in any order."""
    puller = chunks.Puller(chunk=chunk, window=3)
    sink: chunks.Sink | None = None
    now = 0.0
    for _ in range(10_000):
        asked = puller.requests(now)
        if shuffle is not None:
            shuffle.shuffle(asked)
        for off, length in asked:
            data = src.read(off, length)
            puller.got(off, src.total)
            if sink is None:
                sink = chunks.Sink(sink_dir / ".incoming", src.total, src.directory)
            sink.write(off, data)
        if sink is not None and sink.complete():
            return sink
        now += 1.0
    raise AssertionError("the pull never completed")


@pytest.mark.parametrize("size", [0, 1, 1000, 4096, 4097, 50_000])
def test_a_file_pulled_in_pieces_in_any_order_arrives_whole(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    (tmp_path / "f").write_bytes(data)
    src = chunks.Source(tmp_path / "f", tmp_path / "spool")
    sink = _pull(src, tmp_path / "in", chunk=1024, shuffle=random.Random(1))
    assert sha256_file(sink.tmp) == sha256_bytes(data)


def test_a_directory_travels_as_one_spooled_tar_and_unpacks_to_the_same_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "x.txt").write_text("x" * 5000)
    (tree / "y.bin").write_bytes(bytes(range(256)) * 40)
    src = chunks.Source(tree, tmp_path / "spool")
    assert src.directory and src.path.parent == tmp_path / "spool"
    sink = _pull(src, tmp_path / "in", chunk=2048)
    filetree.unpack(sink.tmp, tmp_path / "out")
    assert filetree.tree_hash(tmp_path / "out") == filetree.tree_hash(tree)
    src.close()
    assert not list((tmp_path / "spool").iterdir())  # the spooled tar goes with its source


def test_the_puller_keeps_a_window_and_asks_again_after_a_silence() -> None:
    p = chunks.Puller(chunk=10, window=2, retry_after=5.0)
    assert p.requests(0.0) == [(0, 10)]  # only the first piece until the size is known
    p.got(0, 45)
    assert p.requests(1.0) == [(10, 10), (20, 10)]
    assert p.requests(2.0) == []  # the window is full
    p.got(20, 45)
    assert p.requests(3.0) == [(30, 10)]
    assert p.requests(6.5) == [(10, 10)]  # unanswered since 1.0: asked again
    with pytest.raises(ValueError, match="size changed"):
        p.got(30, 46)


def test_a_sink_refuses_a_piece_past_the_end_and_ignores_a_repeat(tmp_path: Path) -> None:
    sink = chunks.Sink(tmp_path / "t", 10)
    sink.write(0, b"01234")
    sink.write(0, b"01234")
    assert sink.received == 5 and not sink.complete()
    with pytest.raises(ValueError, match="does not fit"):
        sink.write(8, b"xyz")
    sink.write(5, b"56789")
    assert sink.complete() and (tmp_path / "t").read_bytes() == b"0123456789"


def test_a_request_is_checked_proof_first_then_frames_then_name() -> None:
    ok = chunks.get_request(PROOF, CacheName("file-" + "a" * 64), 0, 100)
    assert chunks.parse_request(ok, PROOF) == chunks.Request(CacheName("file-" + "a" * 64), 0, 100)
    with pytest.raises(PermissionError):
        chunks.parse_request(chunks.get_request(b"x" * 32, CacheName("buf-1"), 0, 1), PROOF)
    with pytest.raises(ProtocolError):
        chunks.parse_request([b"get", b"\xff"], PROOF)  # the old request that killed workers
    for bad in (b"\xff", b"a/b", b".lock", b"x" * 300):
        with pytest.raises(ProtocolError, match="bad cache name"):
            chunks.parse_request([chunks.GET, PROOF, bad, bytes(8), (1).to_bytes(4, "big")], PROOF)
    with pytest.raises(ProtocolError, match="a piece is"):
        chunks.parse_request(chunks.get_request(PROOF, CacheName("buf-1"), 0, chunks.CHUNK + 1), PROOF)


def test_replies_parse_back_and_a_malformed_one_is_a_protocol_error() -> None:
    piece = chunks.parse_reply(chunks.chunk_reply(CacheName("buf-1"), 5, 9, True, b"abcd"))
    assert piece == chunks.Piece(CacheName("buf-1"), 5, 9, True, b"abcd")
    assert chunks.parse_reply(chunks.error_reply(b"buf-1", "gone")) == ("buf-1", "gone")
    assert chunks.parse_reply(chunks.error_reply(b"\xff", "bad")) == (None, "bad")
    with pytest.raises(ProtocolError):
        chunks.parse_reply([b"chunk", b"buf-1"])
