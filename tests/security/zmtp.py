"""ZMTP spoken by hand over a plain TCP socket: a peer that can claim what no ZeroMQ socket
would send (a 1 GiB frame), to test what the manager does before any hello is read."""

from __future__ import annotations

import socket
import struct


def _exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buf += chunk
    return buf


def connect_dealer(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection that has done ZMTP 3.0's NULL handshake as a DEALER, ready for frames."""
    s = socket.create_connection((host, port), timeout=timeout)
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
    s.sendall(greeting)
    _exact(s, 64)  # the manager's greeting
    name, value = b"Socket-Type", b"DEALER"
    body = bytes([5]) + b"READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    s.sendall(bytes([0x04, len(body)]) + body)  # a short command frame
    flags, size = _exact(s, 2)  # the manager's READY
    _exact(s, size if not flags & 0x02 else struct.unpack(">Q", bytes([size]) + _exact(s, 7))[0])
    return s


def long_frame_header(size: int, more: bool = False) -> bytes:
    """The header of one message frame claiming ``size`` bytes."""
    return bytes([0x02 | (0x01 if more else 0)]) + struct.pack(">Q", size)
