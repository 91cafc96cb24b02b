"""Addresses on this machine, shared by the manager (which writes where it listens) and
`LocalCluster` (which tells its workers where to connect before the manager has said so): one
rule, so the two never disagree."""

from __future__ import annotations

import socket


def local_address(host: str) -> str:
    """An address this machine can reach a socket bound to ``host`` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "*", "") else host


def free_port(host: str) -> int:
    """A port nobody listens on at ``host`` now (another program may take it before it is bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
