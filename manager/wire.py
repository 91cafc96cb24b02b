"""The manager's socket: the one ROUTER that clients, workers and admins connect to.

It is made through the workflow's :class:`~kubevine.auth.Credentials`, so it refuses any
message over ``MAX_MESSAGE`` from anyone (a peer that claims a larger frame is disconnected
before its bytes are read, also before it has said hello) and, when the workflow encrypts,
speaks only ZeroMQ CURVE with the server key derived from the token. A peer that fails the
handshake (a plain client against an encrypting manager, or a stranger) never reaches the
service; a socket monitor notices each failure and the manager says so in its log.

What strangers can make the manager write is bounded: warnings about failed handshakes,
refused hellos and malformed messages go through a :class:`Throttle`, one line per peer
address per minute and a count of what was left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from kubevine.auth import Credentials
from kubevine.protocol import _Msg, encode, send

log = logging.getLogger(__name__)

THROTTLE_INTERVAL = 60.0  # seconds: one warning per peer address (and kind) this often
MAX_KEYS = 10_000  # addresses remembered by a throttle (older ones are forgotten)

_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Throttle:
    """Rate-limited warnings: at most one line per key (a peer's address) per ``interval``
    seconds; the lines left out are counted and the count is said with the next line for
    that key, and in total by :meth:`flush` once an interval has passed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = THROTTLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}  # key -> when its last line was written
        self._held: dict[str, int] = {}  # key -> lines left out since
        self._summary_due = 0.0

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Write ``msg % args`` unless ``key`` had a line in the last interval; True if written."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        if len(self._last) >= MAX_KEYS:  # forget the oldest (dicts keep insertion order)
            self._last.pop(next(iter(self._last)))
        self._last.pop(key, None)
        self._last[key] = now
        if held:
            self.log.warning(msg + " (and %d more like it from %s since)", *args, held, key)
        else:
            self.log.warning(msg, *args)
        return True

    def flush(self) -> None:
        """Once an interval: say how many lines were left out in all (and forget them)."""
        now = self.clock()
        if now < self._summary_due or not self._held:
            return
        self._summary_due = now + self.interval
        total, keys = sum(self._held.values()), len(self._held)
        self._held.clear()
        self.log.warning("%d more warning(s) like the above from %d address(es) were not logged", total, keys)


class ManagerSocket:
    """The ROUTER, set up by ``credentials``, and the monitor that watches its handshakes."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], credentials: Credentials) -> None:
        self.credentials = credentials
        sock: zmq.Socket[bytes] = credentials.server(ctx.socket(zmq.ROUTER))
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        self.sock = sock
        self.monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        self.throttle = Throttle(log)
        self.handshake_failures = 0

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); the port."""
        if port == 0:
            return self.sock.bind_to_random_port(f"tcp://{host}")
        self.sock.bind(f"tcp://{host}:{port}")
        return port

    def recv(self) -> tuple[zmq.Frame, list[bytes]] | None:
        """The next waiting message: its identity frame (which also knows the peer's address)
        and its body; None when nothing waits."""
        try:
            ident = self.sock.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        return ident, self.sock.recv_multipart(zmq.NOBLOCK) if ident.more else []

    def send(self, ident: bytes, msg: _Msg, frames: list[bytes] | None = None) -> bool:
        try:
            send(self.sock, [ident, *encode(msg, frames or [])])
            return True
        except zmq.ZMQError as e:  # EHOSTUNREACH: the peer is gone
            log.debug("cannot send %s: %s", msg.__class__.__name__, e)
            return False

    def handshakes_failed(self) -> None:
        """Read the monitor: each failed handshake is counted, and logged (throttled)."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            self.handshake_failures += 1
            what = (
                "encryption (CURVE) handshake"
                if self.credentials.encrypt
                else "handshake (the peer may encrypt, this manager does not)"
            )
            endpoint: Any = event.get("endpoint", b"")
            self.throttle.warning(
                "handshake",
                "a connection failed the %s on %s (%d so far)",
                what,
                endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else endpoint,
                self.handshake_failures,
            )

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


def peer_address(ident: zmq.Frame) -> str:
    """The address a message came from (the peer's IP), or "?"."""
    try:
        return str(ident.get("Peer-Address") or "?")
    except zmq.ZMQError:
        return "?"
