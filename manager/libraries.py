"""Libraries: what is installed where, where a call may go, and when an instance starts or goes.

A library is registered once by a client; instances of it run on workers. A call may go to a
worker whose instance is ready and has a free slot. How many calls an instance may hold beyond
its slots depends on how short recent calls were: enough queued to cover a few milliseconds of
work, so a busy library never waits a round trip for its next call, and nothing queued ahead
of long calls. When calls wait and no instance is on its way, one starts where it fits, or
where an idle instance of a library nobody waits for can make room.

Pure, like :mod:`kubevine.manager.dataplane`: functions of the core's state that change it and
append instructions; called by :class:`kubevine.manager.core.Core` when it handles library
events and when it schedules.
"""

from __future__ import annotations

import enum
import heapq
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from kubevine import txformat
from kubevine.ids import ClientId, TaskId, WorkerId
from kubevine.manager import affinity, dataplane, timing
from kubevine.manager.instructions import ClientError, SendInstall, SendRemove
from kubevine.protocol import FileKind, LibrarySpec, Outcome, StageIn, TaskKind, TaskSpec, walk_bindings
from kubevine.resources import Resources, Tally
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import WorkerEntry

log = logging.getLogger(__name__)

QUEUE_SECONDS = 0.005  # how much work (by recent call time) an instance may hold beyond its slots
MAX_AHEAD = 500  # calls an instance may hold beyond its slots, at most
BROKEN_AFTER = 2  # start-up failures (on any workers) after which a library is given up
PLAN_AHEAD = 1000  # calls whose inputs cannot be staged yet, looked at per cycle at most
STARTS_PER_PASS = 64  # library instances started in one scheduling pass at most

S = TaskState


@dataclass(slots=True)
class LibraryEntry:
    spec: LibrarySpec
    payload: bytes
    client: ClientId
    failures: int = 0
    failed_on: set[str] = field(default_factory=set)  # workers where it failed to start
    broken: str | None = None  # why it was given up
    crashes: int = 0  # instances that failed to start or ended unasked (tune max-library-retries)
    avg_wall: float | None = None
    ready: list[tuple[float, int, TaskId]] = field(default_factory=list)  # calls waiting

    def observe(self, wall: float) -> None:
        self.avg_wall = wall if self.avg_wall is None else 0.9 * self.avg_wall + 0.1 * wall

    def capacity(self) -> int:
        """Calls one instance may hold at once (running + queued there)."""
        slots = self.spec.slots
        if self.avg_wall is None:
            return slots
        ahead = int(QUEUE_SECONDS * slots / max(self.avg_wall, 1e-6))
        return slots + min(MAX_AHEAD, ahead)


class InstanceState(enum.StrEnum):
    """An instance of a library on one worker."""

    INSTALLING = "installing"  # asked for; the worker has not said it started
    READY = "ready"  # running: calls may go to it


@dataclass(slots=True)
class Instance:
    """A library on one worker."""

    state: InstanceState
    active: int = 0  # calls dispatched to it and not yet ended


# ------------------------------------------------------------------ what clients ask


def call_problem(core: Core, spec: TaskSpec) -> str | None:
    """Why a function call cannot run at all, or None."""
    if spec.kind != TaskKind.CALL:
        return None
    lib = core.libraries.get(spec.library or "")
    if lib is None:
        return f"no library named {spec.library!r} is installed (m.install_library first)"
    if lib.broken is not None:
        return f"library {spec.library!r} cannot start: {lib.broken}"
    if spec.function not in lib.spec.functions:
        return (
            f"library {spec.library!r} has no function {spec.function!r} "
            f"(it has: {', '.join(lib.spec.functions)})"
        )
    return None


def install(core: Core, client: ClientId, spec: LibrarySpec, payload: bytes) -> None:
    """Register a library; instances start on workers when calls for it wait."""
    old = core.libraries.get(spec.name)
    if old is not None and old.broken is None:
        if old.spec == spec and old.payload == payload:
            return  # the same library again: nothing to do
        why = f"library {spec.name!r} is installed; remove it first"
        core.out.append(ClientError(client, "library_exists", why, []))
        return
    entry = LibraryEntry(spec, payload, client)
    if old is not None:
        entry.ready = old.ready
    core.libraries[spec.name] = entry
    core.batch.libraries[spec.name] = (spec, payload)
    core.transactions.append(txformat.library_registered(spec.name, spec.exec_mode, spec.slots))


def remove(core: Core, name: str, why: str = "was removed") -> None:
    """Forget a library: its instances stop, its waiting calls fail (``why`` says why)."""
    lib = core.libraries.pop(name, None)
    if lib is None:
        return
    core.batch.libraries[name] = None
    for w in core.workers.values():
        if w.libs.pop(name, None) is not None:
            w.committed.remove(lib.spec.resources)
            core.room.touch(w)
            core.out.append(SendRemove(w.id, name))
    _fail_waiting(core, lib, f"library {name!r} {why}")
    core.transactions.append(txformat.library_removed(name))


def _fail_waiting(core: Core, lib: LibraryEntry, error: str) -> None:
    for _, _, tid in lib.ready:
        t = core.tasks.get(tid)
        if t is not None and t.state == S.READY:
            core.life.finish(t, S.FAILED, Outcome.LIBRARY_ERROR, error=error)


# ------------------------------------------------------------------ what workers report


def reported(
    core: Core, wid: WorkerId, name: str, state: Literal["ready", "failed", "gone"], error: str | None
) -> None:
    """An instance started, failed to start, or ended; a library that fails to start on
    :data:`BROKEN_AFTER` workers is given up and its waiting calls fail with the reason; one
    whose instances failed or ended unasked ``max-library-retries`` times (tune) is removed."""
    w = core.workers.get(wid)
    lib = core.libraries.get(name)
    if w is None:
        return
    inst = w.libs.get(name)
    core.transactions.append(txformat.library_on(name, state, wid))
    if lib is not None and lib.spec.inputs:  # its inputs' transfers are over, one way or another
        group = w.info.cache_group or w.info.node
        for b in walk_bindings(lib.spec.inputs):
            if b.cache_name is not None:
                core.catalog.done(wid, b.cache_name, group)
    if state == "ready":
        if inst is None:
            return
        if inst.state == InstanceState.READY and lib is not None:
            # ready again: its worker started it anew after its process died (a crash)
            _crashed(core, lib, "its process died and was started again")
            return
        inst.state = InstanceState.READY
        return
    if inst is not None:  # failed or gone: it holds nothing here any more
        del w.libs[name]
        if lib is not None:
            w.committed.remove(lib.spec.resources)
            core.room.touch(w)
    if lib is None or inst is None:
        return  # gone as asked (removed, evicted), or never ours
    if state == "failed":
        lib.failures += 1
        lib.failed_on.add(wid)
        log.warning("library %s failed on worker %s: %s", name, wid, (error or "")[-500:])
    if _crashed(core, lib, error or state):
        return  # removed
    if state == "failed" and lib.failures >= BROKEN_AFTER:
        lib.broken = (error or "unknown error").strip().splitlines()[-1]
        _fail_waiting(core, lib, f"library {name!r} failed to start: {error or 'unknown error'}")
        lib.ready.clear()


def _crashed(core: Core, lib: LibraryEntry, why: str) -> bool:
    """One of the library's instances failed; after ``max-library-retries`` failures (tune)
    the library is removed: its calls fail "missing library". True if it was removed."""
    lib.crashes += 1
    limit = core.tunables.max_library_retries
    if limit <= 0 or lib.crashes < limit:
        return False
    name = lib.spec.name
    log.warning(
        "library %s: %d failure(s) of its instances (max-library-retries %d)", name, lib.crashes, limit
    )
    last = why.strip().splitlines()[-1] if why.strip() else why
    remove(
        core, name, f"was removed after {lib.crashes} failures of its instances (max-library-retries): {last}"
    )
    return True


# ------------------------------------------------------------------ scheduling


def schedule_calls(core: Core, lib: LibraryEntry, workers: list[WorkerEntry]) -> None:
    """Send waiting calls to ready instances with room, the least busy first; start an
    instance when calls wait and none is on its way."""
    name = lib.spec.name
    cap = lib.capacity()
    ready = lib.ready
    usable = [w for w in workers if (i := w.libs.get(name)) is not None and i.state == InstanceState.READY]
    later: list[tuple[float, int, TaskId]] = []  # calls whose inputs cannot be staged yet
    peers: dict[WorkerId, tuple[str | None, str]] | None = None
    while ready:
        if core.pass_left <= 0:
            core.behind = True  # the rest next turn (the pass's budget is spent)
            break
        best = _least_busy(usable, name, cap)
        if best is None:
            break
        item = heapq.heappop(ready)
        t = core.tasks.get(item[2])
        if t is None or t.state != S.READY or timing.hold(core, t, item):
            continue
        stages: list[StageIn] | None = []
        if t.spec.inputs or t.spec.features:
            places = affinity.where(core, t, usable)  # features; inputs that must not travel
            if places is not None:
                best = _least_busy(places, name, cap)
            if best is not None and t.spec.inputs:
                peers = core.peers() if peers is None else peers
                stages = dataplane.stage_for(core, core.catalog, t, best, peers)
        if best is None or stages is None:  # no instance it may use has room, or its sources are busy
            later.append(item)
            if len(later) >= PLAN_AHEAD:  # enough planning for one cycle
                break
            continue
        best.libs[name].active += 1
        best.calls += 1
        core.dispatch(t, best, stages)
    for item in later:
        heapq.heappush(ready, item)
    if ready and lib.broken is None:  # what the ready instances cannot take (a pass's budget
        # may have stopped short of filling them): more instances for it. The queue may still
        # hold calls cancelled while they waited: only those still ready count
        room = sum(max(0, cap - w.libs[name].active) for w in usable)
        waiting = min(len(ready), core.life.calls_ready.get(name, 0))
        _start_instances(core, lib, workers, waiting - room, cap)


def _least_busy(workers: list[WorkerEntry], name: str, cap: int) -> WorkerEntry | None:
    """The worker whose instance of ``name`` has the fewest calls, if that is under ``cap``."""
    best: WorkerEntry | None = None
    best_active = cap
    for w in workers:
        active = w.libs[name].active
        if active < best_active:
            best, best_active = w, active
    return best


def _start_instances(
    core: Core, lib: LibraryEntry, workers: list[WorkerEntry], waiting: int, cap: int
) -> None:
    """Start as many instances as ``waiting`` calls fill (``cap`` calls each), less those on
    their way, at most :data:`STARTS_PER_PASS` a pass. One at a time, a library whose calls
    are long reached N workers only after N start-ups (seconds each, for a library that
    imports a physics stack); all at once, instant calls would start one on every worker for
    a few calls each."""
    name = lib.spec.name
    instances = [i for w in workers if (i := w.libs.get(name)) is not None]
    installing = sum(1 for i in instances if i.state == InstanceState.INSTALLING)
    want = min(STARTS_PER_PASS, -(-waiting // max(1, cap)) - installing)
    if lib.avg_wall is None:
        # how long its calls take is not known yet: instant calls need few instances (each
        # takes hundreds), long ones many. Until a call has ended, the instances at most
        # double per start-up: 1, 2, 4, ... (a thousand workers reached in ten start-ups)
        running = len(instances) - installing
        want = min(want, max(1, 2 * running) - len(instances))
    if want <= 0:
        return
    # where it fits now (workers where it failed last, the emptiest first), or else where an
    # idle instance of a library nobody is waiting for makes room
    fits = sorted(
        (
            w
            for w in workers
            if name not in w.libs and w.committed.room_for(lib.spec.resources, w.info.resources)
        ),
        key=lambda w: (w.id in lib.failed_on, w.committed.cores - w.info.resources.cores),
    )
    for target in fits[:want]:
        if not _start_on(core, lib, target):
            return
    for _ in range(want - min(want, len(fits))):
        freed = _evict_idle_library_for(core, lib, workers)
        if freed is None or not _start_on(core, lib, freed):
            return


def _start_on(core: Core, lib: LibraryEntry, target: WorkerEntry) -> bool:
    """Start an instance on ``target``; False if its inputs cannot be staged yet (nor anywhere)."""
    name = lib.spec.name
    stages = _stage_inputs(core, lib, target) if lib.spec.inputs else []
    if stages is None:  # its inputs are on the worker before the library starts there
        return False  # not yet: an input is still to be made, or its sources are busy
    target.libs[name] = Instance(InstanceState.INSTALLING)
    target.committed.add(lib.spec.resources)
    core.room.touch(target)
    core.out.append(SendInstall(target.id, name, stages))
    core.transactions.append(txformat.library_on(name, "installing", target.id))
    return True


def _stage_inputs(core: Core, lib: LibraryEntry, w: WorkerEntry) -> list[StageIn] | None:
    """How ``w`` gets the library's inputs (LibrarySpec.inputs); None while one cannot come yet
    (a temp not made, a source busy). A client file that never reached the manager breaks the
    library: its calls fail, saying which."""
    lost = [
        b.remote_name
        for b in walk_bindings(lib.spec.inputs)
        if b.kind in (FileKind.LOCAL, FileKind.BUFFER)
        and dataplane.absent(core, b)
        and b.cache_name not in core.expected
    ]
    if lost:
        lib.broken = f"its input(s) {', '.join(lost)} never reached the manager"
        _fail_waiting(core, lib, f"library {lib.spec.name!r}: {lib.broken}")
        lib.ready.clear()
        return None
    if any(dataplane.absent(core, b) for b in walk_bindings(lib.spec.inputs)):
        return None
    return dataplane.stage_inputs(core, core.catalog, lib.spec.inputs, w, core.peers())


def idle_instances(core: Core, w: WorkerEntry) -> list[tuple[str, LibraryEntry]]:
    """Library instances on ``w`` with no call running or waiting."""
    return [
        (name, o)
        for name, inst in w.libs.items()
        if inst.state == InstanceState.READY
        and not inst.active
        and (o := core.libraries.get(name))
        and not o.ready
    ]


def evict_idle_libraries(core: Core, need: Resources, workers: list[WorkerEntry]) -> WorkerEntry | None:
    """Remove idle library instances (no calls running or waiting) from one worker until
    ``need`` fits there; that worker, or None (and nothing removed)."""
    for w in workers:
        idle = idle_instances(core, w)
        freed = Tally()
        for _, o in idle:
            freed.add(o.spec.resources)
        w.committed.remove(freed.snapshot())
        fits = w.committed.room_for(need, w.info.resources)
        w.committed.add(freed.snapshot())
        if not fits:
            continue
        for name, o in idle:
            del w.libs[name]
            w.committed.remove(o.spec.resources)
            core.room.touch(w)
            core.out.append(SendRemove(w.id, name))
            core.transactions.append(txformat.library_evicted(name, w.id, "task"))
            if w.committed.room_for(need, w.info.resources):
                return w
    return None


def _evict_idle_library_for(core: Core, lib: LibraryEntry, workers: list[WorkerEntry]) -> WorkerEntry | None:
    """Remove one idle instance of another library (no calls running or waiting) from a
    worker where that frees enough room for ``lib``; the worker, or None."""
    for w in workers:
        if lib.spec.name in w.libs:
            continue
        for other, inst in list(w.libs.items()):
            o = core.libraries.get(other)
            if inst.active or inst.state != InstanceState.READY or o is None or o.ready:
                continue
            w.committed.remove(o.spec.resources)
            if w.committed.room_for(lib.spec.resources, w.info.resources):
                core.room.touch(w)
                del w.libs[other]
                core.out.append(SendRemove(w.id, other))
                core.transactions.append(txformat.library_evicted(other, w.id, lib.spec.name))
                return w
            w.committed.add(o.spec.resources)
    return None
