"""A client's control messages (cancel, undeclare, requests) and its submissions reach the
manager in the order the user made them, even when one flush carries them all: a cancel by
tag must not catch a task submitted after it, nor an undeclare pass a submit made after it.
The client's outbox is a plain object (no socket, no thread), so this is checked directly."""

from __future__ import annotations

from kubevine.clientio import BATCH_BYTES, Outbox
from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    MAX_PIECE,
    Cancel,
    PutFiles,
    StatusRequest,
    Submit,
    TaskSpec,
    UndeclareFiles,
    _Msg,
)
from kubevine.task import Upload


def _spec(i: int, tag: str) -> TaskSpec:
    return TaskSpec(id=TaskId(i), command="true", tag=tag)


def _seen(messages: list[tuple[_Msg, list[bytes]]]) -> list[tuple[str, list[int]]]:
    return [(m.type, [t.id for t in m.tasks] if isinstance(m, Submit) else []) for m, _ in messages]  # type: ignore[attr-defined]


def test_one_flush_keeps_submissions_and_control_messages_in_order() -> None:
    box = Outbox()
    box.pending.append((_spec(1, "old"), None))
    box.add_control(Cancel(tag="old"))  # cancels task 1 ...
    box.pending.append((_spec(2, "old"), None))  # ... not task 2, submitted after it
    box.undeclare(CacheName("buf-x"))
    assert _seen(box.messages()) == [
        ("submit", [1]),
        ("cancel", []),
        ("submit", [2]),
        ("undeclare_files", []),
    ]
    assert box.messages() == []  # taking the messages empties the box


def test_undeclares_in_a_row_travel_as_one_message_but_not_across_a_submission() -> None:
    box = Outbox()
    box.undeclare(CacheName("buf-a"))
    box.undeclare(CacheName("buf-b"))
    box.pending.append((_spec(1, "t"), None))
    box.undeclare(CacheName("buf-c"))
    msgs = box.messages()
    assert _seen(msgs) == [("undeclare_files", []), ("submit", [1]), ("undeclare_files", [])]
    first, last = msgs[0][0], msgs[2][0]
    assert isinstance(first, UndeclareFiles) and first.cache_names == ["buf-a", "buf-b"]
    assert isinstance(last, UndeclareFiles) and last.cache_names == ["buf-c"]


def test_files_go_before_the_submissions_that_read_them_and_payloads_are_renumbered() -> None:
    box = Outbox()
    box.files.append(Upload(CacheName("buf-1"), data=b"one", size=3))
    box.pending.append((_spec(1, "a"), b"payload-1"))
    box.add_control(StatusRequest())
    box.pending.append((_spec(2, "a"), None))
    box.pending.append((_spec(3, "a"), b"payload-3"))
    msgs = box.messages()
    assert [m.type for m, _ in msgs] == ["put_files", "submit", "status_request", "submit"]
    put, frames = msgs[0]
    assert isinstance(put, PutFiles) and frames == [b"one"]
    sub, frames = msgs[3]
    assert isinstance(sub, Submit)
    assert [t.payload for t in sub.tasks] == [None, 0] and frames == [b"payload-3"]


def test_a_large_file_leaves_in_pieces_and_what_was_queued_after_it_waits(tmp_path) -> None:
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * (3 * MAX_PIECE // 256 + 10))  # three pieces and a bit
    box = Outbox()
    box.files.append(Upload(CacheName("file-big"), path=big, size=big.stat().st_size))
    box.pending.append((_spec(1, "reads-big"), None))
    first = box.messages(budget=2 * MAX_PIECE)
    assert [m.type for m, _ in first] == ["put_files"]  # the task waits for its file
    put, frames = first[0]
    assert isinstance(put, PutFiles)
    assert [(f.offset, f.size, f.total) for f in put.files] == [
        (0, MAX_PIECE, big.stat().st_size),
        (MAX_PIECE, MAX_PIECE, big.stat().st_size),
    ]
    rest = box.messages(budget=2 * MAX_PIECE)
    assert [m.type for m, _ in rest] == ["put_files", "submit"]
    pieces = b"".join(frames) + b"".join(rest[0][1])
    assert pieces == big.read_bytes() and box.messages() == []


def test_submissions_are_split_so_no_message_carries_more_than_a_batch() -> None:
    box = Outbox()
    payload = b"x" * (BATCH_BYTES // 3 + 1)
    for i in range(5):
        box.pending.append((_spec(i, "big"), payload))
    msgs = box.messages()
    assert [m.type for m, _ in msgs] == ["submit", "submit", "submit"]
    assert all(sum(map(len, frames)) <= BATCH_BYTES for _, frames in msgs)
    assert [t.id for m, _ in msgs for t in m.tasks] == list(range(5))  # type: ignore[attr-defined]
