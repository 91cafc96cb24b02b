"""The connection to the manager, kept the same way by every client and worker.

A client and a worker both hold one DEALER socket to the manager and must do the same things
with it: say hello (with the token) and wait for the welcome; heartbeat while idle; notice a
manager that went silent and connect again; say hello again when the manager has forgotten
them (``not_registered``) or when a heartbeat names a new manager (it restarted). Written once
here, on one clock (``time.monotonic``).

The session is not a thread: its owner polls :attr:`Session.sock` among its own sockets, hands
each turn's events to :meth:`Session.read` (which returns the messages that are the owner's
business) and calls :meth:`Session.tick` once per turn. What happens to the connection is
reported to the owner through the small :class:`SessionOwner` protocol.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from kubevine.auth import Credentials
from kubevine.protocol import (
    Direction,
    ErrorMsg,
    Heartbeat,
    Hello,
    ProtocolError,
    Refused,
    Welcome,
    _Msg,
    decode,
    encode,
    send,
)

log = logging.getLogger(__name__)

W = TypeVar("W")

# Seconds before an unanswered hello is tried on a new socket, growing 1.5-2.5x (random: a
# thousand workers that lost their manager together do not all come back in step) to at most
# BACKOFF_MAX. A hello sent before the manager is up is queued by ZeroMQ and delivered when it
# binds, so a retry is for a manager that went away: 0.1 s doubling sent 18,614 hellos for
# 5,000 simulated workers joining one busy manager (docs/scale.md).
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
#: Handshakes cut short in a row (the manager accepted the connection and closed it before the
#: greeting was read) taken for an encryption mismatch. The manager closes a connection whose
#: greeting names the other security mechanism; when it is another process, the close often
#: arrives before its own greeting is read, and ZeroMQ reports no detail. ZeroMQ retries every
#: 100 ms, so three take a third of a second; a manager that is restarting refuses connections
#: instead of accepting and cutting them.
CUT_HANDSHAKES = 3


class SessionOwner(Protocol):
    def hello(self) -> Hello:
        """The hello to send now (a worker's names what it holds at this moment)."""

    def welcomed(self, welcome: Welcome, *, again: bool, new_manager: bool) -> None:
        """The manager took us (``again``: not for the first time; ``new_manager``: a different
        manager process than the one before)."""

    def refused(self, reason: str) -> None:
        """The manager will not have us (wrong token, protocol version)."""

    def reset(self) -> None:
        """The connection was replaced or forgotten by the manager: anything asked on it and
        not yet answered will not be, and must be asked again once welcomed."""


class Session(Generic[W]):
    """One owner's connection to the manager (see the module doc)."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        address: str,
        owner: SessionOwner,
        direction: Direction[Any],
        *,
        poller: zmq.Poller,
        credentials: Credentials | None = None,
        send_queue: int = 0,
        heartbeat_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        # called when the manager's end of a registered connection closes (its process ended):
        # a TaskVine --single-shot worker leaves then, not after a heartbeat timeout
        self.on_disconnect = on_disconnect
        self.address = address
        self.owner = owner
        self.direction = direction
        self.poller = poller
        self.clock = clock
        self.name = name or address
        self.credentials = credentials
        self.send_queue = send_queue  # messages queued before try_send says "full" (0: no limit)
        self._writing = False
        self.sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None  # handshake failures: an encryption mismatch
        self._cut_handshakes = 0  # handshakes in a row the manager cut short (CUT_HANDSHAKES)
        self.registered = False
        self.manager_id: str | None = None
        self.interval = heartbeat_interval  # heartbeat when nothing was sent for this long
        self.own_interval = heartbeat_interval
        self.timeout = 30.0  # the manager's word once welcomed
        now = clock()
        self.last_heard = self.last_sent = self.hello_sent = now
        self.waiting_since: float | None = now  # not registered since then (None: registered)
        self.backoff = BACKOFF_FIRST

    # ------------------------------------------------------------------ the socket

    def connect(self) -> None:
        """A new socket to the manager, and a hello on it."""
        self._close_socket()
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, self.send_queue)
        s.setsockopt(zmq.RCVHWM, 0)
        if self.credentials is not None:
            self.credentials.client(s)
        events = (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self._cut_handshakes = 0
        if self.on_disconnect is not None:
            events |= zmq.EVENT_DISCONNECTED
        self._monitor = s.get_monitor_socket(events)
        s.connect(f"tcp://{self.address}")
        self.sock = s
        self._writing = False
        self.poller.register(s, zmq.POLLIN)
        self.poller.register(self._monitor, zmq.POLLIN)
        self._unregister()
        self._hello()

    def send(self, msg: _Msg, frames: Sequence[bytes] = ()) -> None:
        assert self.sock is not None
        send(self.sock, encode(msg, frames))
        self.last_sent = self.clock()

    def try_send(self, msg: _Msg, frames: Sequence[bytes] = ()) -> bool:
        """Send unless the socket's queue is full (False: nothing was sent; try again later)."""
        assert self.sock is not None
        parts = encode(msg, frames)
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=not any(len(p) >= 1 << 16 for p in parts))
        except zmq.Again:
            return False
        self.last_sent = self.clock()
        return True

    def want_write(self, on: bool) -> None:
        """Whether the owner's poll should also wake when the socket has room to send."""
        if self.sock is not None and on != self._writing:
            self._writing = on
            self.poller.modify(self.sock, zmq.POLLIN | (zmq.POLLOUT if on else 0))

    def close(self, linger: int = 0) -> None:
        self._close_socket(linger)

    def _close_socket(self, linger: int = 0) -> None:
        if self._monitor is not None:
            self.poller.unregister(self._monitor)
            if self.sock is not None:
                self.sock.disable_monitor()
            self._monitor.close(0)
            self._monitor = None
        if self.sock is not None:
            self.poller.unregister(self.sock)
            self.sock.close(linger)
            self.sock = None

    # ------------------------------------------------------------------ each turn

    def read(self, events: dict[object, int]) -> list[tuple[W, list[bytes]]]:
        """Every message waiting on the socket: the session's own are handled here; the rest
        (decoded for this end's direction) are returned in order for the owner."""
        out: list[tuple[W, list[bytes]]] = []
        if self._monitor is not None and self._monitor in events:
            self._monitor_events()
        if self.sock is None or self.sock not in events:
            return out
        while self.sock is not None:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.last_heard = self.clock()
            try:
                msg, frames = decode(parts, self.direction)
            except ProtocolError as e:
                log.error("%s: bad message from the manager: %s", self.name, e)
                continue
            if not self._own(msg):
                out.append((msg, frames))  # the direction minus the session's own
        return out

    def tick(self) -> None:
        """Heartbeat when due; connect again when the manager is silent or never answered."""
        now = self.clock()
        if self.registered:
            if now - self.last_heard > self.timeout + self.interval:
                log.warning(
                    "%s: manager at %s silent for %.0fs; reconnecting",
                    self.name,
                    self.address,
                    now - self.last_heard,
                )
                self.owner.reset()
                self.connect()
            elif now - self.last_sent > self.interval:
                self.send(Heartbeat())
        elif now - self.hello_sent > self.backoff:
            self.backoff = min(self.backoff * random.uniform(1.5, 2.5), BACKOFF_MAX)
            self.connect()

    def due_in(self) -> float:
        """Seconds until :meth:`tick` has something to do (for the owner's poll timeout)."""
        now = self.clock()
        if self.registered:
            return max(
                0.0, min(self.last_sent + self.interval, self.last_heard + self.timeout + self.interval) - now
            )
        return max(0.0, self.hello_sent + self.backoff - now)

    # ------------------------------------------------------------------ internals

    def _monitor_events(self) -> None:
        seen = 0
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            seen |= event
            if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._cut_handshakes += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._cut_handshakes = 0
        if seen & zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL or self._cut_handshakes >= CUT_HANDSHAKES:
            self._handshake_failed()
        elif seen & zmq.EVENT_DISCONNECTED and self.registered and self.on_disconnect is not None:
            self.on_disconnect()

    def _handshake_failed(self) -> None:
        """The manager and this end disagree on encryption: no message can ever pass, so say
        so now instead of waiting for a welcome that cannot come."""
        creds = self.credentials or Credentials("x" * 16)
        reason = creds.mismatch(f"the manager at {self.address}")
        log.error("%s: %s", self.name, reason)
        self.owner.refused(reason)

    def _hello(self) -> None:
        self.send(self.owner.hello())
        self.hello_sent = self.clock()

    def _unregister(self) -> None:
        if self.registered:
            self.registered = False
            self.waiting_since = self.clock()

    def _own(self, msg: object) -> bool:
        if isinstance(msg, Welcome):
            again = self.manager_id is not None
            new_manager = again and msg.manager_id != self.manager_id
            self.manager_id = msg.manager_id
            self.registered, self.waiting_since, self.backoff = True, None, BACKOFF_FIRST
            self.timeout = msg.heartbeat_timeout
            self.interval = min(self.own_interval, msg.heartbeat_interval)
            self.owner.welcomed(msg, again=again, new_manager=new_manager)
            return True
        if isinstance(msg, Refused):
            self.owner.refused(msg.reason)
            return True
        if isinstance(msg, Heartbeat):
            if msg.manager_id and self.manager_id and msg.manager_id != self.manager_id:
                self._hello()  # a new manager: introduce ourselves again
            return True
        if isinstance(msg, ErrorMsg) and msg.code == "not_registered":
            was = self.registered
            self._unregister()
            if was:
                self.owner.reset()
            self._hello()
            return True
        return False
