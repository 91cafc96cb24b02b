"""What the manager reads: each message decoded as what its sender's role may send, then
turned into the core's events (or answered at once: status, files).

A peer's messages are decoded as what its role may send (kubevine.protocol's directions):
another role's message is refused before its body is read, and each role's dispatch is a
``match`` that mypy checks is complete. A stranger may only say hello. Whatever goes wrong with
one message — it is malformed, of another role, or its handling fails — is answered to its
sender alone and changes nothing else; a malformed submission is answered with the ids of the
tasks it carried, when they can be read, so the client fails those tasks instead of waiting
for them. The warnings all this causes are throttled per peer address.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, assert_never

import zmq

from kubevine.ids import ClientId, TaskId, WorkerId
from kubevine.manager import events
from kubevine.manager.fetches import serve_worker
from kubevine.manager.peers import Peer
from kubevine.manager.wire import Throttle, peer_address
from kubevine.protocol import (
    FROM_ADMIN,
    FROM_CLIENT,
    FROM_WORKER,
    PACKED,
    TO_MANAGER,
    Cancel,
    Drain,
    DrainWorkers,
    ErrorMsg,
    FetchFile,
    FileRequest,
    Goodbye,
    Heartbeat,
    Hello,
    IdBlockRequest,
    InstallLibrary,
    LibraryStatus,
    ProtocolError,
    PutFiles,
    RemoveLibrary,
    ResultsAck,
    StatusReply,
    StatusRequest,
    Submit,
    Tune,
    UndeclareFiles,
    UnexpectedMessage,
    WorkerUpdate,
    decode,
    frame,
    message_type,
)

if TYPE_CHECKING:
    from kubevine.manager.service import ManagerService

log = logging.getLogger(__name__)

DRAIN_BATCH = 5000  # messages read in one turn of the loop at most
DRAIN_SECONDS = 0.02  # and for this long at most: the rest next turn, after a scheduling pass


class Receiver:
    """The service's inbound half (it owns the state; this reads the socket for it)."""

    def __init__(self, svc: ManagerService) -> None:
        self.svc = svc
        self.core = svc.core
        self.wire = svc.wire
        self.sessions = svc.sessions
        self.throttle = Throttle(log)
        self.failures = 0  # messages whose handling raised (a bug: said, never fatal)

    def drain(self, now: float) -> bool:
        """Read and handle every waiting message (up to :data:`DRAIN_BATCH`, or for
        :data:`DRAIN_SECONDS`); whether the socket was left empty."""
        peers = self.sessions.peers
        deadline = time.monotonic() + DRAIN_SECONDS
        for _ in range(DRAIN_BATCH):
            if time.monotonic() > deadline:
                return False
            got = self.wire.recv()
            if got is None:
                return True
            ident_frame, body = got
            ident = ident_frame.bytes
            peer = peers.get(ident)
            try:
                if peer is None:
                    self._from_stranger(ident_frame, ident, body, now)
                    continue
                peer.heard = now
                if peer.role == "worker":
                    self._from_worker(ident_frame, ident, WorkerId(peer.id), body, now)
                elif peer.role == "client":
                    self._from_client(ident_frame, ident, ClientId(peer.id), body, now)
                else:
                    self._from_admin(ident_frame, ident, body, now)
            except UnexpectedMessage as e:  # well formed, but not what this role sends
                if peer is None:  # a stranger may only say hello
                    self.wire.send(ident, ErrorMsg(code="not_registered", message="say hello first"))
                else:
                    message = f"{peer.role}s do not send {e.tag}"
                    self.wire.send(ident, ErrorMsg(code="unexpected", message=message))
            except ProtocolError as e:
                self._malformed(ident_frame, ident, peer, body, e)
            except Exception as e:  # a bug in handling one message must not end the manager
                self.failures += 1
                log.exception("handling a message from %s failed", peer.id if peer else "an unknown peer")
                self.wire.send(ident, ErrorMsg(code="internal", message=f"the manager failed on it: {e!r}"))
        return False

    def _malformed(
        self, frame_: zmq.Frame, ident: bytes, peer: Peer | None, body: list[bytes], e: ProtocolError
    ) -> None:
        who = f"{peer.role} {peer.id}" if peer else "an unknown peer"
        address = peer_address(frame_)
        self.throttle.warning(address, "malformed message from %s at %s: %s", who, address, e)
        ids = submitted_ids(body) if peer is not None and peer.role == "client" else []
        self.wire.send(ident, ErrorMsg(code="malformed", message=str(e), task_ids=ids))

    # ------------------------------------------------------------------ by role

    def _from_stranger(self, frame_: zmq.Frame, ident: bytes, body: list[bytes], now: float) -> None:
        """An unknown peer may only say hello (after a manager restart, everyone is one)."""
        msg, _ = decode(body, TO_MANAGER)
        if isinstance(msg, Hello):
            self.sessions.hello(frame_, ident, msg, now)
        else:
            self.wire.send(ident, ErrorMsg(code="not_registered", message="say hello first"))

    def _from_worker(
        self, frame_: zmq.Frame, ident: bytes, wid: WorkerId, body: list[bytes], now: float
    ) -> None:
        msg, frames = decode(body, FROM_WORKER)
        if isinstance(msg, Hello):
            self.sessions.hello(frame_, ident, msg, now)
            return
        core, svc = self.core, self.svc
        if wid not in core.workers:
            # declared lost while it was silent (paused, partitioned): its tasks went
            # elsewhere; it must say hello again and report what it holds
            self.sessions.peers.forget(ident)
            self.wire.send(
                ident, ErrorMsg(code="not_registered", message="you were declared lost; say hello")
            )
            return
        core.handle(events.WorkerSeen(wid))
        match msg:
            case WorkerUpdate():
                if svc.loader is not None and not svc.loader.named_tasks(
                    [*(r.task_id for r in msg.started), *(r.task_id for r in msg.results)]
                ):  # a restore in slices, and the store cannot be read now: its results would
                    # be taken for unknown tasks; it reports them again after its next hello
                    self.sessions.peers.forget(ident)
                    why = "the manager cannot read its tasks from the store now; say hello again"
                    self.wire.send(ident, ErrorMsg(code="not_registered", message=why))
                    return
                svc.counters.attempts_ended(msg.results)
                update = events.WorkerUpdated(
                    wid, msg.started, msg.results, frames, msg.cached, msg.evicted, msg.transfers
                )
                core.handle(update)
                for rec in msg.transfers:
                    if rec.ok and rec.source != "node":
                        svc.counters.transfer(rec.source, rec.bytes)
            case FileRequest():
                serve_worker(svc.files, ident, msg, self.wire.send)
            case LibraryStatus():
                core.handle(events.LibraryReported(wid, msg.name, msg.state, msg.error))
            case Drain():
                core.handle(events.DrainRequested([wid]))
            case Goodbye():
                log.info("worker %s left: %s", wid, msg.reason)
                core.handle(events.WorkerLost(wid, f"left ({msg.reason})"))
                self.sessions.goodbye(ident)
            case Heartbeat():
                pass
            case _:
                assert_never(msg)

    def _from_client(
        self, frame_: zmq.Frame, ident: bytes, cid: ClientId, body: list[bytes], now: float
    ) -> None:
        msg, frames = decode(body, FROM_CLIENT)
        core, svc = self.core, self.svc
        if (
            svc.loader is not None
            and cid in self.sessions.peers.unwelcomed
            and not isinstance(msg, Hello | Heartbeat | Goodbye | StatusRequest)
        ):  # its welcome waits for every task to load: what it sends would meet a partial table
            ids = [s.id for s in msg.tasks] if isinstance(msg, Submit) else []
            why = (
                f"the manager is loading its workflow's tasks ({svc.loader.progress()}); wait for the welcome"
            )
            self.wire.send(ident, ErrorMsg(code="loading", message=why, task_ids=ids))
            return
        match msg:
            case Hello():
                self.sessions.hello(frame_, ident, msg, now)
            case Submit():
                self._submit(ident, cid, msg, frames)
            case PutFiles():
                self._put_files(ident, cid, msg, frames)
            case ResultsAck():
                core.handle(events.ResultsAcked(cid, msg.task_ids))
            case InstallLibrary():
                core.handle(events.LibraryInstalled(cid, msg.spec, frame(frames, msg.frame) or b""))
            case RemoveLibrary():
                core.handle(events.LibraryRemoved(cid, msg.name))
            case Cancel():
                core.handle(events.CancelRequested(cid, msg.task_ids, msg.tag))
            case UndeclareFiles():
                core.handle(events.FilesUndeclared(cid, msg.cache_names))
                svc.fetches.forget(msg.cache_names)
            case IdBlockRequest():
                core.handle(events.IdsRequested(cid))
            case StatusRequest():
                st = svc.status(with_workers=msg.workers)
                self.wire.send(ident, StatusReply(status=st.model_dump_json()))
            case FetchFile():
                svc.fetches.ask(core, ident, cid, msg)
            case Tune():
                core.handle(events.Tuned(cid, msg.name, msg.value))
            case Goodbye():
                core.handle(events.ClientLeft(cid))
                self.sessions.goodbye(ident)
            case Heartbeat():
                pass
            case _:
                assert_never(msg)

    def _from_admin(self, frame_: zmq.Frame, ident: bytes, body: list[bytes], now: float) -> None:
        """``kubevine status`` and the operator: they read the status and drain workers."""
        msg, _ = decode(body, FROM_ADMIN)
        match msg:
            case Hello():
                self.sessions.hello(frame_, ident, msg, now)
            case StatusRequest():
                st = self.svc.status(with_workers=msg.workers)
                self.wire.send(ident, StatusReply(status=st.model_dump_json()))
            case DrainWorkers():
                self.core.handle(events.DrainRequested(msg.worker_ids))
            case Goodbye():
                self.sessions.goodbye(ident)
            case Heartbeat():
                pass
            case _:
                assert_never(msg)

    # ------------------------------------------------------------------ clients' work

    def _submit(self, ident: bytes, cid: ClientId, msg: Submit, frames: list[bytes]) -> None:
        svc = self.svc
        if not svc._refusing:
            # a spec keeps the payload index it came with; dispatches carry their own
            self.core.handle(
                events.TasksSubmitted(cid, msg.tasks, [frame(frames, s.payload) for s in msg.tasks])
            )
            return
        ids = [s.id for s in msg.tasks]
        message = (
            f"the state store has been unreachable for {svc.persister.outage:.0f}s "
            f"(longer than the manager's --redis-outage-grace of "
            f"{svc.config.redis_outage_grace:.0f}s): {len(ids)} task(s) not accepted; "
            "submit them again once it is back (tasks accepted before are safe)"
        )
        self.wire.send(ident, ErrorMsg(code="store_unavailable", message=message, task_ids=ids))

    def _put_files(self, ident: bytes, cid: ClientId, msg: PutFiles, frames: list[bytes]) -> None:
        """Client files, whole or in pieces: each becomes available once whole and checked."""
        from kubevine.manager.service import MAX_STORED_FILE

        datas = []
        for f in msg.files:  # all checked before any is taken
            data = frame(frames, f.frame)
            if data is None or len(data) != f.size:
                raise ProtocolError(f"file {f.cache_name}: {len(data or b'')} bytes sent, {f.size} declared")
            if f.total is None and f.offset:
                raise ProtocolError(f"file {f.cache_name}: a whole file starts at offset 0")
            datas.append(data)
        uploads, core = self.svc.uploads, self.core
        arrived, started, refused = [], [], []
        for f, data in zip(msg.files, datas, strict=True):
            name = f.cache_name
            if f.total is None or (f.offset == 0 and f.size == f.total and not uploads.started(name)):
                why, whole = uploads.whole(name, data), True
            else:
                new = not uploads.started(name)
                whole, why = uploads.piece(cid, name, f.offset, f.total, data)
                if new and not whole and why is None:
                    started.append(name)
            if why is not None:
                refused.append((name, why))
            elif whole:
                arrived.append(name)
                size = self.svc.files.size(name) or 0
                if size <= MAX_STORED_FILE:
                    core.handle(
                        events.FileKept(name, data if f.total is None else self.svc.files.get(name) or b"")
                    )
                else:
                    log.warning(
                        "file %s (%d bytes) is too large to keep in the state store; a new manager "
                        "gets it from a worker's cache or the client",
                        name,
                        size,
                    )
        if started:
            core.handle(events.FilesExpected(tuple(started)))
        if arrived:
            core.handle(events.FilesArrived(tuple(arrived)))
        for name, why in refused:
            log.warning("client %s: %s", cid, why)
            core.handle(events.UploadFailed(name, why))
            self.wire.send(ident, ErrorMsg(code="bad_file", message=why))


def submitted_ids(body: list[bytes]) -> list[TaskId]:
    """The task ids a malformed submission carried, read from its raw JSON where they can be
    (the client then fails those tasks at once); [] for anything that is not a submit."""
    if not body:
        return []
    head = body[0][1:] if body[0][:1] == PACKED else body[0]
    if message_type(body[0]) != "submit":
        return []
    try:
        raw = json.loads(head)
    except ValueError:
        return []
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    if not isinstance(tasks, list):
        return []
    ids = [t.get("id") for t in tasks if isinstance(t, dict)]
    return [TaskId(i) for i in ids if isinstance(i, int) and not isinstance(i, bool) and i >= 0]
