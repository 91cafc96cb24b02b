"""A small synchronous client for operators and scripts: read a manager's status, drain workers.

The operator's autoscaler and ``kubevine status`` need two things from a manager and
nothing else; this connects as role ``admin`` (so it owns no tasks and gets no results),
asks, and returns. Each call opens and closes its own connection, so it is safe to use
from any thread or event-loop executor; it ends with a goodbye, so the manager forgets the
session at once (the operator asks every few seconds, for as long as a workflow lives).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import zmq

from kubevine.auth import Credentials, encrypt_from_env
from kubevine.ids import WorkerId
from kubevine.protocol import (
    PROTOCOL_VERSION,
    TO_CLIENT,
    DrainWorkers,
    ErrorMsg,
    Goodbye,
    Hello,
    Refused,
    StatusReply,
    StatusRequest,
    Welcome,
    _Msg,
    decode,
    encode,
)
from kubevine.stats import ManagerStatus


class AdminError(Exception):
    """The manager could not be reached, refused us, or answered with an error."""


class Admin:
    def __init__(
        self, address: str, token: str, timeout: float = 5.0, *, encrypt: bool | None = None
    ) -> None:
        self.address = address
        self.credentials = Credentials(token, encrypt_from_env() if encrypt is None else encrypt)
        self.timeout = timeout

    @property
    def token(self) -> str:
        return self.credentials.token

    def _session(self, msg: _Msg, want: type[_Msg] | None) -> _Msg | None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        s: zmq.Socket[bytes] = self.credentials.client(ctx.socket(zmq.DEALER))
        s.setsockopt(zmq.LINGER, 500)
        try:
            s.connect(f"tcp://{self.address}")
            s.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION, token=self.token, role="admin")))
            self._expect(s, Welcome)
            try:
                s.send_multipart(encode(msg))
                return self._expect(s, want) if want is not None else None
            finally:
                s.send_multipart(encode(Goodbye(reason="admin done")))
        finally:
            s.close()

    def _expect(self, s: zmq.Socket[bytes], want: type[_Msg]) -> _Msg:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not s.poll(int(left * 1000)):
                hint = (
                    ""
                    if self.credentials.encrypt
                    else " (if it encrypts its connections, set $KUBEVINE_ENCRYPT=1)"
                )
                raise AdminError(f"no answer from the manager at {self.address} within {self.timeout}s{hint}")
            reply, _ = decode(s.recv_multipart(), TO_CLIENT)
            if isinstance(reply, want):
                return reply
            if isinstance(reply, Refused):
                raise AdminError(f"manager at {self.address} refused us: {reply.reason}")
            if isinstance(reply, ErrorMsg):
                raise AdminError(f"manager at {self.address}: {reply.code}: {reply.message}")
            # heartbeats and the like: keep waiting

    def status(self) -> ManagerStatus:
        reply = self._session(StatusRequest(), StatusReply)
        assert isinstance(reply, StatusReply)
        return ManagerStatus.model_validate_json(reply.status)

    def drain(self, worker_ids: Iterable[str]) -> None:
        """Ask the manager to drain these workers: no new tasks; released when idle."""
        ids = [WorkerId(w) for w in worker_ids]
        if ids:
            self._session(DrainWorkers(worker_ids=ids), None)
