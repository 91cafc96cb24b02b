"""The workflow token: how every command finds it, and how a manager makes one.

Every connection to a manager presents the workflow's secret token. All commands take it
the same way: ``--token-file F``, else the environment variable ``KUBEVINE_TOKEN``. A
manager given neither generates one and writes it to a file only its owner can read.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

ENV = "KUBEVINE_TOKEN"


class TokenError(Exception):
    """No token could be found or read."""


def load_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The token from the file if given, else from ``KUBEVINE_TOKEN``, else None."""
    if token_file:
        try:
            tok = Path(token_file).read_text().strip()
        except OSError as e:
            raise TokenError(f"cannot read token file {token_file}: {e.strerror}") from e
        if not tok:
            raise TokenError(f"token file {token_file} is empty")
        return tok
    tok = os.environ.get(ENV, "").strip()
    return tok or None


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_token(path: str | os.PathLike[str], token: str) -> Path:
    """Write a token readable by its owner only (mode 0600), atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, p)
    return p


def same(a: str, b: str) -> bool:
    """Constant-time comparison, so a wrong token leaks nothing through timing."""
    return hmac.compare_digest(a.encode(), b.encode())
