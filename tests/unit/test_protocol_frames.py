"""Small frames travel packed in one ZeroMQ frame; decoding gives back the same frames."""

from __future__ import annotations

import pytest

from kubevine.protocol import (
    PACK_BELOW,
    PACKED,
    ClientResult,
    Outcome,
    ProtocolError,
    Results,
    decode,
    encode,
)


def results(n: int) -> Results:
    return Results(
        results=[
            ClientResult(task_id=i, state="done", attempts=1, outcome=Outcome.SUCCESS, output_frame=i)  # type: ignore[arg-type]
            for i in range(n)
        ]
    )


def test_many_small_frames_travel_as_one_and_come_back_in_order() -> None:
    frames = [f"value {i}".encode() for i in range(1000)] + [b""]
    parts = encode(results(1001), frames)
    assert len(parts) == 2 and parts[0].startswith(PACKED)
    msg, got = decode(parts)
    assert isinstance(msg, Results) and len(msg.results) == 1001
    assert got == frames


def test_a_single_frame_or_a_large_one_travels_on_its_own() -> None:
    big = b"x" * PACK_BELOW
    for frames in ([b"one"], [b"small", big]):
        parts = encode(results(len(frames)), frames)
        assert parts[1:] == frames and not parts[0].startswith(PACKED)
        assert decode(parts)[1] == frames


@pytest.mark.parametrize(
    "after, why",
    [
        ([b"\xc1"], "cannot be read"),
        ([b"\x92\x01\x02"], "array of byte strings"),
        ([b"\x91\xc4\x01a", b"more"], "one frame expected"),
    ],
)
def test_packed_frames_that_are_not_what_they_claim_are_an_error(after: list[bytes], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode([PACKED + b'{"type": "heartbeat"}', *after])
