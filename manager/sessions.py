"""Hellos, sessions and heartbeats: who may talk to the manager, and for how long.

Every peer starts with a hello carrying the protocol version and the workflow's token. A
refused one gets :class:`~kubevine.protocol.Refused` and nothing else; the warning it causes
is throttled per peer address (:class:`~kubevine.manager.wire.Throttle`), so a stranger
hammering the port with wrong hellos cannot fill the manager's log. An accepted one becomes a
session (:class:`~kubevine.manager.peers.Peers`) that lives while the peer talks: a goodbye
ends it, and so does a silence longer than the heartbeat timeout — a client then counts as
gone (its results wait for its return), a worker is declared lost by the core on the same
timeout. Heartbeats go to live sessions only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import zmq

from kubevine import auth
from kubevine.ids import ClientId, TaskId, WorkerId
from kubevine.manager import events
from kubevine.manager.config import ManagerConfig
from kubevine.manager.loader import NotLoadedYet
from kubevine.manager.peers import Peers
from kubevine.manager.wire import ManagerSocket, Throttle, peer_address
from kubevine.protocol import (
    PROTOCOL_VERSION,
    ErrorMsg,
    Heartbeat,
    Hello,
    ProtocolError,
    Refused,
    Welcome,
    encode,
)

if TYPE_CHECKING:
    from kubevine.manager.core import Core

log = logging.getLogger(__name__)

WRONG_TOKEN = "invalid token for this workflow"


class Sessions:
    """The manager's side of every peer's session."""

    def __init__(
        self,
        config: ManagerConfig,
        core: Core,
        sock: ManagerSocket,
        welcome: Callable[[], Welcome],
        refusing: Callable[[], str | None],
        loading: Callable[[Iterable[TaskId]], str | None],
    ) -> None:
        """``welcome()``: a welcome for a worker or an admin; ``refusing()``: why new clients
        cannot be welcomed now (the state store is away), or None; ``loading(ids)``: while a
        restarted manager still loads its tasks, loads ``ids`` (the tasks a worker holds) at
        once and says how far the load is (NotLoadedYet if it cannot now), else None."""
        self.config = config
        self.core = core
        self.sock = sock
        self.welcome = welcome
        self.refusing = refusing
        self.loading = loading
        self.peers = Peers()
        self.throttle = Throttle(log)
        self.refused = 0  # hellos refused since the start
        self._turn = 0  # heartbeat ticks so far: each tick heartbeats one slice of the peers

    def hello(self, frame: zmq.Frame, ident: bytes, msg: Hello, now: float) -> None:
        """Take a peer in, or refuse it (throttled warning, per address)."""
        why = self._refusal(msg)
        if why is not None:
            self.refused += 1
            address = peer_address(frame)
            said = "wrong or missing token" if why == WRONG_TOKEN else why
            self.throttle.warning(address, "refused a %s connection from %s: %s", msg.role, address, said)
            self.sock.send(ident, Refused(reason=why))
            return
        peers = self.peers
        peers.forget(ident)
        if msg.role == "worker":
            if msg.worker is None:
                raise ProtocolError("a worker hello must describe the worker")
            info = msg.worker
            try:  # the tasks it holds, known before the core reads its hello
                self.loading(r.task_id for r in info.running)
            except NotLoadedYet:  # unanswered: it says hello again after its back-off
                log.info("worker %s: its hello waits until the store can be read", info.worker_id)
                return
            peers.bind(ident, "worker", info.worker_id, now)
            self.sock.send(ident, self.welcome())
            self.core.handle(events.WorkerConnected(info))
            log.info(
                "worker %s connected from %s (node %s, %s)",
                info.worker_id,
                info.host,
                info.node,
                info.resources.describe(),
            )
            return
        cid = msg.client or ClientId(f"anon-{uuid.uuid4().hex[:8]}")
        peers.bind(ident, msg.role, cid, now)
        if msg.role == "admin":
            self.sock.send(ident, self.welcome())
            return
        # a client: its welcome (with its id block) goes out once durable, and its results after it
        peers.unwelcomed.add(cid)
        self.core.handle(events.ClientConnected(cid, msg.attach))
        away = self.refusing()
        if away is not None:  # its welcome must wait for the store: say so now
            self.sock.send(ident, ErrorMsg(code="store_unavailable", message=away))
            return
        progress = self.loading(())
        if progress is not None:  # its welcome lists its tasks: it waits until all are loaded
            message = (
                f"the manager is loading its workflow's tasks from the store ({progress}); welcome follows"
            )
            self.sock.send(ident, ErrorMsg(code="loading", message=message))

    def _refusal(self, msg: Hello) -> str | None:
        if msg.protocol != PROTOCOL_VERSION:
            return f"protocol version mismatch: peer speaks {msg.protocol}, manager speaks {PROTOCOL_VERSION}"
        if not auth.same(msg.token, self.config.token):
            return WRONG_TOKEN
        return None

    def goodbye(self, ident: bytes) -> None:
        peer = self.peers.forget(ident)
        if peer is not None:
            self.peers.unwelcomed.discard(peer.id)

    def expire(self, now: float) -> None:
        """Forget sessions silent for longer than the heartbeat timeout; a client's counts as gone."""
        for peer in self.peers.expire(now, self.config.heartbeat_timeout):
            log.info("%s %s: no word for %.0fs; session closed", peer.role, peer.id, now - peer.heard)
            if peer.role == "client":
                self.core.handle(events.ClientLeft(ClientId(peer.id)))

    def heartbeat(self, manager_id: str, every: int = 1) -> None:
        """A heartbeat to each live session (a client once welcomed; a worker the core still
        has): on each call to one in ``every`` of them, so each hears one every ``every`` calls
        (sending to 5,000 workers each second was 16 % of an idle manager)."""
        hb = encode(Heartbeat(manager_id=manager_id))
        peers, workers, sock = self.peers, self.core.workers, self.sock.sock
        turn = self._turn % every
        self._turn += 1
        for i, ((role, pid), ident) in enumerate(list(peers.routes.items())):
            if role == "worker" and WorkerId(pid) not in workers:
                peers.forget(ident)  # declared lost: it must say hello again
                continue
            if i % every != turn or (role == "client" and pid in peers.unwelcomed):
                continue  # not its turn; or a client whose welcome comes first
            try:
                sock.send_multipart([ident, *hb])
            except zmq.ZMQError:
                pass
