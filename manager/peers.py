"""Who is behind each ZeroMQ identity of the manager's socket, and how to reach each peer.

The manager's ROUTER socket knows a peer only by the identity frame its messages arrive with.
A peer that said hello is bound to its role and id here (a worker id, a client name, an
admin session); a later hello under the same role and id (a reconnect) takes the route over,
and its old identity is forgotten. Clients whose welcome is still waiting for the store are
tracked too: nothing else reaches them before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["client", "worker", "admin"]


@dataclass(slots=True)
class Peer:
    role: Role
    id: str


class Peers:
    """The manager's peers, by identity and by (role, id)."""

    def __init__(self) -> None:
        self.by_ident: dict[bytes, Peer] = {}
        self.routes: dict[tuple[Role, str], bytes] = {}
        self.unwelcomed: set[str] = set()  # clients whose welcome waits for durability

    def get(self, ident: bytes) -> Peer | None:
        return self.by_ident.get(ident)

    def route(self, role: Role, pid: str) -> bytes | None:
        """The identity to send to ``pid`` of ``role`` by, if it is connected."""
        return self.routes.get((role, pid))

    def bind(self, ident: bytes, role: Role, pid: str) -> None:
        old = self.routes.get((role, pid))
        if old is not None and old != ident:
            self.by_ident.pop(old, None)
        self.by_ident[ident] = Peer(role, pid)
        self.routes[(role, pid)] = ident

    def forget(self, ident: bytes) -> None:
        peer = self.by_ident.pop(ident, None)
        if peer is not None and self.routes.get((peer.role, peer.id)) == ident:
            del self.routes[(peer.role, peer.id)]
