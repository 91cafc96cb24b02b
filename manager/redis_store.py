"""The Redis state store: durable workflow state, one fenced transaction per cycle.

Why a Lua script: a cycle's writes must land all together or not at all, and only while
this manager still holds the workflow. The script checks the fencing epoch and applies the
whole batch atomically in one round trip, so durability costs one Redis call per cycle
however many tasks moved. A manager that was paused and lost its lease gets ``FENCED``
instead of overwriting its successor's state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError, TimeoutError

from kubevine import keys
from kubevine.ids import TaskId, WorkerId
from kubevine.manager.store import (
    LeaseHeld,
    Snapshot,
    StateStore,
    StoreError,
    TaskRecord,
    WriteBatch,
)
from kubevine.protocol import ClientResult, TaskSpec, WorkerInfo
from kubevine.wire import pack_frames, unpack_frames

log = logging.getLogger(__name__)

# ARGV[1]: the fencing epoch; ARGV[2]: a msgpack array of operations, each
# {"S", key, {f1, v1, f2, v2, ...}} (HSET) or {"D", key, {f1, f2, ...}} (HDEL).
# One packed argument instead of thousands: packing arguments one by one cost more than
# the write itself.
_APPLY = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return redis.error_reply('FENCED workflow now belongs to epoch ' .. tostring(cur))
end
local ops = cmsgpack.unpack(ARGV[2])
for _, op in ipairs(ops) do
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

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LOST')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
            self.r = redis.Redis.from_url(url, password=password, socket_timeout=10)
            self._apply = self.r.register_script(_APPLY)
            self._acquire = self.r.register_script(_ACQUIRE)
            self._renew = self.r.register_script(_RENEW)
            self._release = self.r.register_script(_RELEASE)
        except (RedisError, ValueError) as e:
            raise StoreError(f"cannot use Redis at {_safe_url(url)}: {e}") from e
        self._epoch: int | None = None
        self._conn: Connection | None = None
        self.url = _safe_url(url)
        try:
            self._apply_sha: str = self.r.script_load(_APPLY)  # type: ignore[no-untyped-call]
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

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
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        self._epoch = epoch
        return epoch

    def renew(self, owner: str, ttl: float) -> None:
        try:
            self._renew(keys=[keys.lease(self.workflow)], args=[owner, int(ttl * 1000)])
        except ResponseError as e:
            raise StoreError("lease lost: another manager took this workflow") from e
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
            pipe.hgetall(keys.workers(w))
            pipe.hgetall(keys.meta(w))
            specs, payloads, records, results, workers, meta = pipe.execute()
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e
        snap = Snapshot()
        for k, v in specs.items():
            tid = TaskId(int(k))
            snap.specs[tid] = (TaskSpec.model_validate_json(v), payloads.get(k))
        for k, v in records.items():
            snap.records[TaskId(int(k))] = TaskRecord.from_json(v)
        for k, v in results.items():
            head, frames = unpack_frames(v)
            snap.results[TaskId(int(k))] = (ClientResult.model_validate_json(head), frames)
        for k, v in workers.items():
            snap.workers[WorkerId(k.decode())] = WorkerInfo.model_validate_json(v)
        snap.meta = {k.decode(): v.decode() for k, v in meta.items()}
        return snap

    def apply(self, batch: WriteBatch) -> None:
        if self._epoch is None:
            raise StoreError("apply before acquire")
        ops: list[list[Any]] = []
        w = self.workflow
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
        if batch.deleted:
            d = list(batch.deleted)
            for key in (keys.specs(w), keys.payloads(w), keys.records(w), keys.results(w)):
                _hdel(ops, key, d)
        try:
            self._eval_apply(keys.epoch(w), msgpack.packb(ops, use_bin_type=False))
        except ResponseError as e:
            if "FENCED" in str(e):
                raise StoreError(f"fenced: {e}") from e
            raise StoreError(f"Redis rejected the write: {e}") from e
        except RedisError as e:
            raise StoreError(f"Redis at {self.url} unreachable: {e}") from e

    def _eval_apply(self, epoch_key: str, packed: bytes) -> None:
        """EVALSHA on a connection of our own: the pooled client's per-call bookkeeping
        cost more CPU than the write (the writer thread calls this once per group commit)."""
        if self._conn is None:
            self._conn = self.r.connection_pool.make_connection()
        conn = self._conn
        for _ in range(2):
            try:
                conn.send_command("EVALSHA", self._apply_sha, 1, epoch_key, self._epoch, packed)
                conn.read_response()
                return
            except NoScriptError:  # Redis restarted and forgot the script: load it again
                self._apply_sha = self.r.script_load(_APPLY)  # type: ignore[no-untyped-call]
            except (ConnectionError, TimeoutError):
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


def _hset(ops: list[list[Any]], key: str, items: Iterable[tuple[object, str | bytes]]) -> None:
    flat: list[str | bytes] = []
    for f, v in items:
        flat += (str(f), v)
    if flat:
        ops.append(["S", key, flat])


def _hdel(ops: list[list[Any]], key: str, fields: Sequence[object]) -> None:
    if fields:
        ops.append(["D", key, [str(f) for f in fields]])


def _safe_url(url: str) -> str:
    """The URL without its password, fit for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
