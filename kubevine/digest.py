"""One content hash (sha256, hex) for bytes, files and names, used on every side.

Cache names promise their content (``file-<sha256>``, ``buf-<sha256>``), workers check what
arrives against them, and temps and URLs are named by hashing what defines them. All of those
must agree on one function; reading a file is done in 1 MiB chunks so a large input never
sits in memory whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path | str) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            d.update(chunk)
    return d.hexdigest()
