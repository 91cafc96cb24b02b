"""Who is behind each ZeroMQ identity of the manager's socket, and how to reach each peer.

The manager's ROUTER socket knows a peer only by the identity frame its messages arrive with.
A peer that said hello is bound to its role and id here (a worker id, a client name, an
admin session); a later hello under the same role and id (a reconnect) takes the route over,
and its old identity is forgotten. Clients whose welcome is still waiting for the store are
tracked too: nothing else reaches them before it.

A session lives while its peer talks: each message renews it, a goodbye ends it, and one that
was silent for longer than the heartbeat timeout is forgotten (:meth:`Peers.expire`), so a
caller that vanished without a goodbye (a killed ``kubevine status``, an operator restarted
mid-call) costs nothing after that — no route, no heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["client", "worker", "admin"]


@dataclass(slots=True)
class Peer:
    role: Role
    id: str
    heard: float = 0.0  # when its last message arrived (the service's clock)


class Peers:
    """The manager's peers, by identity and by (role, id)."""

    def __init__(self) -> None:
        self.by_ident: dict[bytes, Peer] = {}
        self.routes: dict[tuple[Role, str], bytes] = {}
        self.unwelcomed: set[str] = set()  # clients whose welcome waits for durability

    def __len__(self) -> int:
        """Sessions held (said hello, not yet gone)."""
        return len(self.by_ident)

    def get(self, ident: bytes) -> Peer | None:
        return self.by_ident.get(ident)

    def route(self, role: Role, pid: str) -> bytes | None:
        """The identity to send to ``pid`` of ``role`` by, if it is connected."""
        return self.routes.get((role, pid))

    def bind(self, ident: bytes, role: Role, pid: str, now: float = 0.0) -> None:
        old = self.routes.get((role, pid))
        if old is not None and old != ident:
            self.by_ident.pop(old, None)
        self.by_ident[ident] = Peer(role, pid, now)
        self.routes[(role, pid)] = ident

    def forget(self, ident: bytes) -> Peer | None:
        """End the session of ``ident``; the peer it was, if any."""
        peer = self.by_ident.pop(ident, None)
        if peer is not None and self.routes.get((peer.role, peer.id)) == ident:
            del self.routes[(peer.role, peer.id)]
        return peer

    def expire(self, now: float, timeout: float) -> list[Peer]:
        """Forget every session silent for longer than ``timeout``; the peers forgotten."""
        silent = [ident for ident, p in self.by_ident.items() if now - p.heard > timeout]
        gone = [p for ident in silent if (p := self.forget(ident)) is not None]
        for p in gone:
            self.unwelcomed.discard(p.id)
        return gone
