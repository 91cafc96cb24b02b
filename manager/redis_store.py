"""The Redis state store: durable workflow state, one fenced transaction per cycle.

Why a Lua script: a cycle's writes must land all together or not at all, and only while
this manager still holds the workflow. The script checks the fencing epoch and applies the
whole batch atomically in one round trip, so durability costs one Redis call per cycle
however many tasks moved. A manager that was paused and lost its lease gets ``FENCED``
instead of overwriting its successor's state.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import redis
from redis.connection import Connection
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from kubevine import keys
from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.manager.store import (
    LeaseHeld,
    Snapshot,
    StateStore,
    StoreError,
    StoreRejected,
    StoreUnreachable,
    StoreWiped,
    TaskRecord,
    WriteBatch,
)
from kubevine.protocol import ClientResult, LibrarySpec, TaskSpec, WorkerInfo
from kubevine.wire import pack_frames, unpack_frames

log = logging.getLogger(__name__)

# Client files kept in Redis per group commit: the rest of a commit's files are left out
# (a new manager gets them from a worker's cache or the client), so that one EVALSHA
# argument stays far below Redis's 512 MB limit on a single argument (proto-max-bulk-len).
MAX_COMMIT_FILE_BYTES = 128 << 20

# Redis refusals that pass (a failover, a restart loading its data, a long script): an outage.
_TRANSIENT = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "OOM")

# KEYS[1]: the epoch key, KEYS[2]: the lease key. ARGV[1]: the fencing epoch; ARGV[2]: a
# msgpack array of operations, each {"S", key, {f1, v1, f2, v2, ...}} (HSET),
# {"D", key, {f1, f2, ...}} (HDEL) or {"X", key} (DEL); ARGV[3]: "1" for a reseed, which
# also restores the epoch and the lease (ARGV[4]: owner, ARGV[5]: lease TTL in ms).
# One packed argument instead of thousands: packing arguments one by one cost more than
# the write itself.
_APPLY = """
local cur = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  -- a reseed: the whole state of a manager whose store forgot it (or never had it)
  if cur ~= false and cur ~= ARGV[1] then
    return redis.error_reply('FENCED workflow now belongs to epoch ' .. tostring(cur))
  end
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[4] then
    return redis.error_reply('FENCED workflow now held by ' .. holder)
  end
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
elseif cur == false then
  return redis.error_reply('WIPED the store holds no epoch for this workflow')
elseif cur ~= ARGV[1] then
  return redis.error_reply('FENCED workflow now belongs to epoch ' .. tostring(cur))
else
  -- epochs restart at 1 after a wipe: the same number may belong to a newer manager
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[4] then
    return redis.error_reply('FENCED workflow now held by ' .. holder)
  end
end
local ops = cmsgpack.unpack(ARGV[2])
for _, op in ipairs(ops) do
  if op[1] == 'X' then
    redis.call('DEL', op[2])
  else
    local items = op[3]
    local n = #items
    local step = 4000
    for i = 1, n, step do
      local j = math.min(i + step - 1, n)
      if op[1] == 'S' then
        redis.call('HSET', op[2], unpack(items, i, j))
      else
        redis.call('HDEL', op[2], unpack(items, i, j))
      end
    end
  end
end
return 1
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return redis.error_reply('HELD ' .. holder)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# Renewal also takes the lease back if it ran out while no one else took it (the manager
# was cut off from Redis for longer than the TTL): the epoch tells whether anyone did.
_RENEW = """
local cur = redis.call('GET', KEYS[2])
if cur == false then
  return redis.error_reply('WIPED')
end
if cur ~= ARGV[3] then
  return redis.error_reply('LOST epoch ' .. cur)
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return redis.error_reply('LOST held by ' .. holder)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""


class RedisStore(StateStore):
    durable = True

    def __init__(self, url: str, workflow: str, password: str | None = None) -> None:
        self.workflow = workflow
        try:
            self.r = redis.Redis.from_url(url, password=password, socket_timeout=10, socket_connect_timeout=3)
            self._apply = self.r.register_script(_APPLY)
            self._acquire = self.r.register_script(_ACQUIRE)
            self._renew = self.r.register_script(_RENEW)
            self._release = self.r.register_script(_RELEASE)
        except (RedisError, ValueError) as e:
            raise StoreError(f"cannot use Redis at {_safe_url(url)}: {e}") from e
        self._epoch: int | None = None
        self._owner = ""
        self._ttl_ms = 15000
        self.max_commit_file_bytes = MAX_COMMIT_FILE_BYTES
        self._conn: Connection | None = None
        self.url = _safe_url(url)
        # Its SHA1, computed here: Redis is first called on by `acquire` (which may wait for a
        # Redis that starts after the manager); a Redis without the script gets it then.
        self._apply_sha = hashlib.sha1(_APPLY.encode()).hexdigest()

    # -- lease --------------------------------------------------------------------

    def acquire(self, owner: str, ttl: float) -> int:
        w = self.workflow
        try:
            epoch = int(self._acquire(keys=[keys.lease(w), keys.epoch(w)], args=[owner, int(ttl * 1000)]))
        except ResponseError as e:
            if str(e).startswith("HELD"):
                holder = str(e).split(" ", 1)[1]
                raise LeaseHeld(
                    f"workflow {w!r} is driven by another live manager ({holder}); "
                    f"a second manager may start once its lease expires"
                ) from e
            raise StoreError(f"Redis refused the lease: {e}") from e
        except AuthenticationError as e:  # (a ConnectionError, but waiting will not mend it)
            raise StoreError(f"Redis at {self.url} refused the password: {e}") from e
        except (ConnectionError, TimeoutError) as e:
            raise StoreUnreachable(f"Redis at {self.url} unreachable: {e}") from e
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        self._epoch = epoch
        self._owner, self._ttl_ms = owner, int(ttl * 1000)
        return epoch

    def renew(self, owner: str, ttl: float) -> None:
        w = self.workflow
        if self._epoch is None:  # still waiting to take the lease: nothing to renew yet
            return
        try:
            self._renew(keys=[keys.lease(w), keys.epoch(w)], args=[owner, int(ttl * 1000), self._epoch])
        except ResponseError as e:
            if str(e).startswith("WIPED"):
                raise StoreWiped(f"Redis at {self.url} no longer holds workflow {w!r}") from e
            raise StoreError(f"lease lost: another manager took this workflow ({e})") from e
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

    def release(self, owner: str) -> None:
        try:
            self._release(keys=[keys.lease(self.workflow)], args=[owner])
        except RedisError as e:
            log.warning("could not release lease of %s: %s", self.workflow, e)

    # -- state --------------------------------------------------------------------

    def load(self) -> Snapshot:
        w = self.workflow
        try:
            pipe = self.r.pipeline(transaction=True)
            for key in (keys.specs(w), keys.payloads(w), keys.records(w), keys.results(w)):
                pipe.hgetall(key)
            _head_reads(pipe, w)
            specs, payloads, records, results, *head = pipe.execute()
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        snap = _head(*head)
        _tasks(snap, specs, payloads, records, results)
        return snap

    def incarnation(self) -> str:
        try:
            return str(self.r.info("server").get("run_id", ""))
        except ResponseError:  # INFO not allowed to this user: no way to tell
            return ""
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

    def count_tasks(self) -> int:
        try:
            return int(self.r.hlen(keys.records(self.workflow)))
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

    def load_head(self) -> Snapshot:
        try:
            pipe = self.r.pipeline(transaction=True)
            _head_reads(pipe, self.workflow)
            head = pipe.execute()
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        return _head(*head)

    def scan_tasks(self, cursor: int, count: int) -> tuple[int, Snapshot]:
        w = self.workflow
        try:
            after, records = self.r.hscan(keys.records(w), cursor, count=count)
            ids = list(records)
            specs, payloads, results = self._hmget(ids) if ids else ({}, {}, {})
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        snap = Snapshot()
        _tasks(snap, specs, payloads, records, results)
        return int(after), snap

    def load_tasks(self, ids: Sequence[TaskId]) -> Snapshot:
        snap = Snapshot()
        if not ids:
            return snap
        raw = [str(t).encode() for t in ids]
        try:
            vals = self.r.hmget(keys.records(self.workflow), raw)
            records = {k: v for k, v in zip(raw, vals, strict=True) if v is not None}
            found = list(records)
            specs, payloads, results = self._hmget(found) if found else ({}, {}, {})
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        _tasks(snap, specs, payloads, records, results)
        return snap

    def _hmget(self, ids: list[bytes]) -> tuple[dict[bytes, bytes], ...]:
        """Specs, payloads and results of ``ids``, each as {id: value} for those stored."""
        w = self.workflow
        pipe = self.r.pipeline(transaction=False)
        for key in (keys.specs(w), keys.payloads(w), keys.results(w)):
            pipe.hmget(key, ids)
        return tuple(
            {k: v for k, v in zip(ids, vals, strict=True) if v is not None} for vals in pipe.execute()
        )

    def apply(self, batch: WriteBatch) -> None:
        if self._epoch is None:
            raise StoreError("apply before acquire")
        ops: list[list[Any]] = []
        w = self.workflow
        if batch.reseed:
            ops += [["X", k] for k in _state_keys(w)]
        _hset(
            ops,
            keys.specs(w),
            ((t, s.model_dump_json(exclude_none=True)) for t, (s, _) in batch.specs.items()),
        )
        _hset(ops, keys.payloads(w), ((t, p) for t, (_, p) in batch.specs.items() if p is not None))
        _hset(ops, keys.records(w), ((t, r.to_json()) for t, r in batch.records.items()))
        _hset(
            ops,
            keys.results(w),
            (
                (t, pack_frames(r.model_dump_json(exclude_none=True).encode(), fr))
                for t, (r, fr) in batch.results.items()
            ),
        )
        workers_set = [(wid, i.model_dump_json()) for wid, i in batch.workers.items() if i is not None]
        _hset(ops, keys.workers(w), workers_set)
        _hdel(ops, keys.workers(w), [wid for wid, i in batch.workers.items() if i is None])
        _hset(ops, keys.meta(w), batch.meta.items())
        libs = batch.libraries.items()
        packed_libs = ((n, pack_frames(lb[0].model_dump_json().encode(), [lb[1]])) for n, lb in libs if lb)
        _hset(ops, keys.libraries(w), packed_libs)
        _hdel(ops, keys.libraries(w), [n for n, lib in libs if lib is None])
        _hset(ops, keys.files(w), self._files_within_budget(batch.files))
        reps = batch.replicas.items()
        _hset(ops, keys.replicas(w), ((f"{wid} {n}", g) for (wid, n), g in reps if g is not None))
        _hdel(ops, keys.replicas(w), [f"{wid} {n}" for (wid, n), g in reps if g is None])
        _hdel(ops, keys.results(w), list(batch.collected))
        if batch.deleted:
            d = list(batch.deleted)
            for key in (keys.specs(w), keys.payloads(w), keys.records(w), keys.results(w)):
                _hdel(ops, key, d)
        try:
            self._eval_apply(w, msgpack.packb(ops, use_bin_type=False), batch.reseed)
        except ResponseError as e:
            if "FENCED" in str(e):
                raise StoreError(f"fenced: {e}") from e
            if "WIPED" in str(e):
                raise StoreWiped(f"Redis at {self.url} no longer holds workflow {w!r}") from e
            if str(e).startswith(_TRANSIENT):
                raise StoreError(f"Redis at {self.url} refused the write for now: {e}") from e
            raise StoreRejected(f"Redis at {self.url} rejected the write: {e}") from e
        except (RedisError, OSError) as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

    def _files_within_budget(self, files: dict[CacheName, bytes]) -> list[tuple[CacheName, bytes]]:
        kept: list[tuple[CacheName, bytes]] = []
        total = 0
        for name, data in files.items():
            if total + len(data) > self.max_commit_file_bytes:
                log.warning(
                    "file %s (%d bytes) not kept in the state store: this write already holds %d bytes"
                    " of files; a new manager gets it from a worker's cache or the client",
                    name,
                    len(data),
                    total,
                )
                continue
            total += len(data)
            kept.append((name, data))
        return kept

    def _eval_apply(self, w: str, packed: bytes, reseed: bool) -> None:
        """EVALSHA on a connection of our own: the pooled client's per-call bookkeeping
        cost more CPU than the write (the writer thread calls this once per group commit)."""
        if self._conn is None:
            self._conn = self.r.connection_pool.make_connection()
        conn = self._conn
        for _ in range(2):
            try:
                conn.send_command(
                    "EVALSHA",
                    self._apply_sha,
                    2,
                    keys.epoch(w),
                    keys.lease(w),
                    self._epoch,
                    packed,
                    "1" if reseed else "0",
                    self._owner,
                    self._ttl_ms,
                )
                conn.read_response()
                return
            except NoScriptError:  # Redis restarted and forgot the script: load it again
                self._apply_sha = self.r.script_load(_APPLY)  # type: ignore[no-untyped-call]
            except (ConnectionError, TimeoutError, OSError):
                conn.disconnect()
                raise
        raise StoreError("Redis keeps forgetting the apply script")

    def publish_stats(self, stats_json: str) -> None:
        try:
            self.r.set(keys.stats(self.workflow), stats_json)
        except RedisError as e:
            log.warning("could not publish stats: %s", e)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self.r.close()


def _head_reads(pipe: Any, w: str) -> None:
    for key in (keys.workers(w), keys.meta(w), keys.libraries(w), keys.files(w), keys.replicas(w)):
        pipe.hgetall(key)


def _head(
    workers: dict[bytes, bytes],
    meta: dict[bytes, bytes],
    libs: dict[bytes, bytes],
    files: dict[bytes, bytes],
    replicas: dict[bytes, bytes],
) -> Snapshot:
    """A snapshot of everything but the tasks, from the hashes :func:`_head_reads` read."""
    snap = Snapshot()
    for k, v in workers.items():
        snap.workers[WorkerId(k.decode())] = WorkerInfo.model_validate_json(v)
    snap.meta = {k.decode(): v.decode() for k, v in meta.items()}
    for k, v in libs.items():
        head, frames = unpack_frames(v)
        snap.libraries[k.decode()] = (LibrarySpec.model_validate_json(head), frames[0] if frames else b"")
    snap.files = {CacheName(k.decode()): v for k, v in files.items()}
    for k, v in replicas.items():
        wid, name = k.decode().split(" ", 1)
        snap.replicas[(WorkerId(wid), CacheName(name))] = v.decode()
    return snap


def _tasks(
    snap: Snapshot,
    specs: dict[bytes, bytes],
    payloads: dict[bytes, bytes],
    records: dict[bytes, bytes],
    results: dict[bytes, bytes],
) -> None:
    """Decode stored tasks into ``snap`` (each table keyed by the task id's bytes)."""
    for k, v in specs.items():
        snap.specs[TaskId(int(k))] = (TaskSpec.model_validate_json(v), payloads.get(k))
    for k, v in records.items():
        snap.records[TaskId(int(k))] = TaskRecord.from_json(v)
    for k, v in results.items():
        head, frames = unpack_frames(v)
        snap.results[TaskId(int(k))] = (ClientResult.model_validate_json(head), frames)


def _hset(ops: list[list[Any]], key: str, items: Iterable[tuple[object, str | bytes]]) -> None:
    flat: list[str | bytes] = []
    for f, v in items:
        flat += (str(f), v)
    if flat:
        ops.append(["S", key, flat])


def _hdel(ops: list[list[Any]], key: str, fields: Sequence[object]) -> None:
    if fields:
        ops.append(["D", key, [str(f) for f in fields]])


def _state_keys(w: str) -> list[str]:
    """The hashes a reseed replaces (not the lease, epoch or stats)."""
    return [
        keys.specs(w),
        keys.payloads(w),
        keys.records(w),
        keys.results(w),
        keys.workers(w),
        keys.meta(w),
        keys.libraries(w),
        keys.files(w),
        keys.replicas(w),
    ]


def _safe_url(url: str) -> str:
    """The URL without its credentials (user info, a ``password=`` query), fit for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        # The password may hold '@' or '/' (unencoded): cut at the last '@' before the query.
        head, q, query = rest.partition("?")
        if "@" in head:
            url = f"{scheme}://***@{head.rpartition('@')[2]}{q}{query}"
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)
