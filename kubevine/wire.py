"""Packing a header and binary frames into one byte string (for storage, not the wire).

ZeroMQ keeps frames apart on the wire; a Redis hash field holds one value. A stored result
is its JSON header followed by its frames, each prefixed with its length.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_LEN = struct.Struct("<I")


def pack_frames(head: bytes, frames: Sequence[bytes]) -> bytes:
    parts = [_LEN.pack(len(frames)), _LEN.pack(len(head)), head]
    for f in frames:
        parts += [_LEN.pack(len(f)), f]
    return b"".join(parts)


def unpack_frames(data: bytes) -> tuple[bytes, list[bytes]]:
    (n,) = _LEN.unpack_from(data, 0)
    (hl,) = _LEN.unpack_from(data, 4)
    pos = 8
    head = data[pos : pos + hl]
    pos += hl
    frames = []
    for _ in range(n):
        (fl,) = _LEN.unpack_from(data, pos)
        pos += 4
        frames.append(data[pos : pos + fl])
        pos += fl
    return head, frames
