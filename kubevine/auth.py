"""The workflow token: how every command finds it, how a manager makes one, and the keys
that encrypt the wire, derived from it.

Every connection to a manager presents the workflow's secret token. All commands take it
the same way: ``--token-file F``, else the environment variable ``KUBEVINE_TOKEN``. A
manager given neither generates one and writes it to a file only its owner can read. A token
a manager is started with must be long enough to be a secret (``MIN_TOKEN`` characters).

The wire can be encrypted with ZeroMQ's CURVE (``--encrypt`` / ``KUBEVINE_ENCRYPT=1`` /
``Manager(encrypt=True)``; TaskVine's ``ssl`` maps onto it). The manager's and the transfer
servers' key pair is derived from the token (HMAC-SHA256 of it, as a Curve25519 secret), so
whoever holds the token can reach them and nobody else can even complete a handshake;
clients and workers use a fresh key pair per connection, and CURVE's short-term keys give
every connection forward secrecy. docs/security.md has the whole trust model.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from kubevine.protocol import MAX_MESSAGE

log = logging.getLogger(__name__)

ENV = "KUBEVINE_TOKEN"
ENCRYPT_ENV = "KUBEVINE_ENCRYPT"
MIN_TOKEN = 16  # characters; kubevine makes tokens of 43


class TokenError(Exception):
    """No token could be found or read, or it is too weak to protect a workflow."""


def load_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The token from the file if given, else from ``KUBEVINE_TOKEN``, else None."""
    if token_file:
        try:
            tok = Path(token_file).read_text().strip()
            mode = Path(token_file).stat().st_mode
        except OSError as e:
            raise TokenError(f"cannot read token file {token_file}: {e.strerror}") from e
        if not tok:
            raise TokenError(f"token file {token_file} is empty")
        if mode & (stat.S_IRGRP | stat.S_IROTH) and not _secret_volume(Path(token_file)):
            log.warning(
                "token file %s can be read by other users (mode %o): chmod 600 %s",
                token_file,
                stat.S_IMODE(mode),
                token_file,
            )
        return tok
    tok = os.environ.get(ENV, "").strip()
    return tok or None


def _secret_volume(path: Path) -> bool:
    """A Kubernetes Secret mounted into a pod (its files are links into ``..data``): readable by
    the pod's own user and by nobody else on the node, whatever the mode bits say."""
    return path.is_symlink() and (path.parent / "..data").exists()


def check_token(token: str, where: str) -> str:
    """``token`` if it can serve as a workflow's secret; :class:`TokenError` saying why not."""
    if len(token) < MIN_TOKEN:
        raise TokenError(
            f"the token from {where} has {len(token)} character(s): a workflow token needs at least "
            f"{MIN_TOKEN} (leave it out and the manager makes one of {len(generate_token())})"
        )
    return token


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


def runtime_dir() -> Path:
    """This user's folder for the tokens of managers running on this machine (0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".kubevine")
    d = Path(base) / "kubevine-run"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def publish_token(port: int, token: str) -> Path:
    """Let ``kubevine worker localhost PORT`` (TaskVine's two-argument form, as its test drivers
    start workers) find the token of a manager this user started here on ``port``."""
    return write_token(runtime_dir() / f"manager-{port}.token", token)


def published_token(host: str, port: int) -> str | None:
    """The token a manager of this user published for ``port``, if ``host`` is this machine."""
    import socket

    here = {"localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname(), socket.getfqdn()}
    if host not in here and not host.startswith("127."):
        return None
    path = runtime_dir() / f"manager-{port}.token"
    return load_token(path) if path.exists() else None


def same(a: str, b: str) -> bool:
    """Constant-time comparison, so a wrong token leaks nothing through timing."""
    return hmac.compare_digest(a.encode(), b.encode())


def encrypt_from_env() -> bool:
    return os.environ.get(ENCRYPT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _derive(token: str, purpose: bytes) -> bytes:
    return hmac.new(token.encode(), purpose, hashlib.sha256).digest()


@dataclass(frozen=True)
class Credentials:
    """What a process needs to take part in a workflow's wire: the token, whether the wire is
    encrypted, and what follows from both (server keys, the proof a peer shows a transfer
    server). Every socket kubevine opens goes through :meth:`server` or :meth:`client`."""

    token: str
    encrypt: bool = False
    _keys: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        secret = z85.encode(_derive(self.token, b"kubevine curve server key v1"))
        object.__setattr__(self, "_keys", (zmq.curve_public(secret), secret))

    @property
    def server_key(self) -> bytes:
        """The public key of every server of this workflow (manager, transfer servers)."""
        return self._keys[0]

    def server(self, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Set up a listening socket (before it binds): no message over MAX_MESSAGE from anyone
        (a peer that sends one is disconnected), CURVE when encrypting."""
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if self.encrypt:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self._keys
        return sock

    def client(self, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Set up a connecting socket (before it connects): the same size limit; when
        encrypting, a fresh key pair of its own."""
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if self.encrypt:
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.curve_serverkey = self._keys[0]
        return sock

    def transfer_proof(self) -> bytes:
        """What a peer shows a transfer server with each request: derived from the token, so
        a transfer server never sees the token itself."""
        return _derive(self.token, b"kubevine transfer proof v1")

    def mismatch(self, address: str) -> str:
        """Why a handshake with ``address`` failed, said from this side."""
        if self.encrypt:
            return (
                f"{address} does not encrypt its connections and this process does "
                f"(${ENCRYPT_ENV} / --encrypt / encrypt=True): use the same setting on both sides"
            )
        return (
            f"{address} encrypts its connections (ZeroMQ CURVE) and this process does not: set "
            f"${ENCRYPT_ENV}=1, pass --encrypt (workers), or Manager(..., encrypt=True)"
        )
