"""The simulator's one epoll set over many ZeroMQ sockets: a turn of
:class:`kubevine.simworker.Simulator` costs what arrived, not how many workers it holds."""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from kubevine.simworker import SimWorker


class Watch(zmq.Poller):
    """What a worker's Session registers its sockets with: the simulator's epoll set, each
    socket tagged with the worker it belongs to."""

    def __init__(self, hub: Hub, worker: SimWorker) -> None:
        super().__init__()
        self.hub, self.worker = hub, worker

    def register(self, socket: Any, flags: int = zmq.POLLIN) -> None:
        self.hub.watch(socket, self.worker)

    def unregister(self, socket: Any) -> None:
        self.hub.unwatch(socket, self.worker)


class Hub:
    """ZeroMQ sockets in an epoll set. A socket's FD only says "look at me": its EVENTS tell
    whether a message waits, and a send may consume that signal, so every socket touched in a
    turn is looked at again at its end (:meth:`recheck`)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: dict[int, SimWorker] = {}
        self.fds: dict[zmq.Socket[bytes], int] = {}
        self.pending: set[SimWorker] = set()

    def watch(self, sock: zmq.Socket[bytes], w: SimWorker) -> None:
        fd = sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self.epoll.register(fd, select.EPOLLIN)
        self.by_fd[fd] = w
        self.fds[sock] = fd
        w.socks.append(sock)
        self.pending.add(w)

    def unwatch(self, sock: zmq.Socket[bytes], w: SimWorker) -> None:
        fd = self.fds.pop(sock, None)
        if fd is not None:
            self.epoll.unregister(fd)
            self.by_fd.pop(fd, None)
        if sock in w.socks:
            w.socks.remove(sock)

    def poll(self, timeout: float) -> set[SimWorker]:
        ready, self.pending = self.pending, set()
        for fd, _ in self.epoll.poll(timeout if timeout > 0 else 0):
            w = self.by_fd.get(fd)
            if w is not None:
                ready.add(w)
        return ready

    def recheck(self, workers: set[SimWorker]) -> None:
        for w in workers:
            if any(readable(s) for s in w.socks):
                self.pending.add(w)

    def close(self) -> None:
        self.epoll.close()


def readable(sock: zmq.Socket[bytes]) -> bool:
    """A message waits on ``sock`` (reading EVENTS also clears its FD's signal)."""
    return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
