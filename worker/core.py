"""The worker's pure core: what it holds and what it decides, events in, instructions out.

No sockets, processes, files or clocks here. The service (:mod:`kubevine.worker.service`) feeds
typed events (:mod:`kubevine.worker.events`: a task was assigned, its inputs arrived, its
process exited, a call came back, the manager acknowledged results, a turn of the loop ended at
``now``) to :meth:`WorkerCore.handle`, the core's one entry, and carries out the instructions it
returns (:mod:`kubevine.worker.instructions`: start this process, fetch this file, delete that
one, send this update), as distributed's ``worker_state_machine`` does. So every decision a
worker makes — when a task may start, which tasks a failed fetch fails, when a file undeclared
while in use may go, what an update carries and when it leaves, when to say goodbye — is
tested without a process (``tests/unit/test_worker_core.py``).

What the core holds: the tasks here (:class:`Slot`: queued, running a process, or calling a
library), the order they wait in, the resources in use, the libraries it was asked for, how
many tasks use each cached file (pins: the cache reads them to spare those files from
eviction), and what the manager has not heard yet — starts, results (kept until acknowledged,
and reported again after a new welcome), new replicas, evictions, transfers.

The one thing it asks the outside world is whether a file is in the cache, through the
read-only :class:`CacheView` (a set of names will do in a test).

The worker enforces its own resources: the manager may queue a few tasks ahead, but a task
starts only when its cores, memory, disk and gpus are free here.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, assert_never

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    MAX_MESSAGE,
    Assignment,
    AttemptResult,
    CacheLevel,
    FileBinding,
    FileKind,
    FileSource,
    LibrarySpec,
    Outcome,
    StageIn,
    TaskKind,
    TaskRef,
    TransferRecord,
    WatchedPiece,
    WorkerUpdate,
    replace,
    value_output,
    walk_bindings,
)
from kubevine.resources import Resources, Tally
from kubevine.worker.events import (
    CallsReturned,
    Disconnected,
    Event,
    FetchFailed,
    FilesArrived,
    ForgetRequested,
    InstallRequested,
    KillRequested,
    LibraryDied,
    LibraryFailed,
    LibraryReady,
    OutputGrew,
    ProcessExited,
    Released,
    RemoveRequested,
    ResultsAcked,
    TasksAssigned,
    TermRequested,
    Tick,
    ValueKept,
    Welcomed,
)
from kubevine.worker.instructions import (
    Adopt,
    CancelCall,
    DeleteFromCache,
    Derive,
    Exit,
    Fetch,
    Instruction,
    KeepValue,
    KillProcess,
    RestartLibrary,
    SendDrain,
    SendGoodbye,
    SendLibraryStatus,
    SendUpdate,
    SpillValue,
    StartCall,
    StartLibrary,
    StartProcess,
    StopLibrary,
)
from kubevine.worker.states import LibraryState, SlotState

log = logging.getLogger(__name__)

UPDATE_WINDOW = 0.002  # seconds between updates while processes run here (see _flush)
UPDATE_BYTES = MAX_MESSAGE // 2  # frames in one update at most (results past it go in the next)
BACKFILL = 32  # queued tasks that do not fit looked past, per tick, for a smaller one that does
CALL_START_DELAY = 0.005  # a call's start is reported only once it has run this long

Done = tuple[AttemptResult, list[bytes]]  # a result and its frames (stdout, value, outputs)


class CacheView(Protocol):
    """What the core may ask of the cache (``kubevine.worker.cache.Cache`` is one)."""

    def sound(self, name: CacheName, expected: str | None = None) -> bool:
        """The entry is there and intact (matches ``expected``, its sha256, when given)."""

    def has(self, name: CacheName) -> bool:
        """There is an entry of that name."""


@dataclass(slots=True, eq=False)
class Slot:
    """A task the worker holds: queued (waiting for inputs or resources), running a process,
    or handed to its library as a call."""

    assignment: Assignment
    payload: bytes
    missing: set[CacheName] = field(default_factory=set)  # inputs not in the cache yet
    state: SlotState = SlotState.QUEUED

    @property
    def ref(self) -> TaskRef:
        return TaskRef(task_id=self.assignment.spec.id, attempt=self.assignment.attempt)


@dataclass(slots=True, eq=False)
class Library:
    """A library the manager asked for here, as far as the decisions go (its process is the
    service's)."""

    spec: LibrarySpec
    state: LibraryState = LibraryState.STARTING
    payload: bytes = b""
    missing: set[CacheName] = field(default_factory=set)  # its inputs not in the cache yet


class WorkerCore:
    """State and decisions of one worker (see the module doc)."""

    def __init__(
        self,
        resources: Resources,
        cache: CacheView,
        *,
        now: float = 0.0,
        idle_timeout: float = 0.0,
        pins: dict[CacheName, int] | None = None,
        inline_max: int = MAX_MESSAGE // 8,
    ) -> None:
        self.resources = resources
        self.inline_max = inline_max  # a call value larger than this is spilled (chunks.INLINE_MAX)
        self.cache = cache
        self.idle_timeout = idle_timeout  # leave after this long without tasks (0: never)
        self.used = Tally()
        self.pins: dict[CacheName, int] = {} if pins is None else pins  # tasks using each file
        self.slots: dict[TaskId, Slot] = {}
        self.queue: deque[TaskId] = deque()  # slots waiting to start, in arrival order
        self.dying: dict[tuple[TaskId, int], Slot] = {}  # killed processes that have not exited
        self.running = 0  # processes started and not exited (killed ones included)
        self.libraries: dict[str, Library] = {}
        self.doomed: set[CacheName] = set()  # undeclared while a task read them
        self.waiting: dict[CacheName, list[TaskId]] = {}  # tasks queued for each missing file
        self.lib_waiting: dict[CacheName, list[str]] = {}  # libraries waiting for each missing file
        # what the manager has not heard yet
        self.started: list[TaskRef] = []
        self.finished: list[Done] = []
        self.unacked: dict[tuple[TaskId, int], Done] = {}  # reported, not yet acknowledged
        self.new_cached: list[CacheName] = []
        self.evicted: list[CacheName] = []
        self.transfers: list[TransferRecord] = []
        self.watched: list[tuple[WatchedPiece, bytes]] = []  # watched outputs' new content
        self.call_starts: list[tuple[float, TaskId, int]] = []  # calls handed over, start unreported
        # the connection and the way out
        self.registered = False
        self.draining = False
        self.drain_pending = False  # ask the manager to drain us once registered
        self.idle_since: float | None = now  # None: busy since the last tick
        self.last_update = -math.inf
        self.now = now  # the last tick's time
        self.out: list[Instruction] = []

    # ------------------------------------------------------------------ the one entry

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event; the instructions that follow from it, in order."""
        out: list[Instruction] = []
        self.out = out
        match event:  # the frequent ones first: a case costs an isinstance
            case Tick():
                self._tick(event.now)
            case TasksAssigned():
                for a, payload in zip(event.assignments, event.payloads, strict=True):
                    self._accept(a, payload)
            case CallsReturned():
                self.new_cached += event.cached
                self.evicted += event.evicted
                for res, frames in event.results:
                    self._call_result(res, frames)
            case ProcessExited():
                self._process_exited(event)
            case OutputGrew():
                self._output_grew(event)
            case ResultsAcked():
                for ref in event.tasks:
                    self.unacked.pop((ref.task_id, ref.attempt), None)
            case FilesArrived():
                self._files_arrived(event)
            case ValueKept():
                self._value_kept(event)
            case KillRequested():
                for ref in event.tasks:
                    self._kill(ref)
            case FetchFailed():
                self._fetch_failed(event.failures)
            case ForgetRequested():
                self._forget(event.names)
            case InstallRequested():
                self._install(event.spec, event.payload)
            case RemoveRequested():
                self._remove_library(event.name, "removed by the manager")
            case LibraryReady():
                self._library_ready(event.name)
            case LibraryFailed():
                self._active()
                self._remove_library(event.name, "it failed to start", error=event.error)
            case LibraryDied():
                self._library_died(event)
            case Welcomed():
                self._welcomed()
            case Disconnected():
                self.registered = False
            case TermRequested():
                self._term()
            case Released():
                log.info("released by the manager")
                self._flush(self.now, force=True)
                out += [SendGoodbye(reason="drained"), Exit(0)]
            case _:
                assert_never(event)
        return out

    # ------------------------------------------------------------------ questions

    @property
    def busy(self) -> bool:
        return bool(self.slots or self.dying)

    def held(self) -> list[TaskRef]:
        """Attempts this worker holds, running or finished and unacknowledged (for a hello):
        also those that finished while it was away and are not reported yet (left out, the
        manager took the task for lost with this worker, ran it again and dropped the result
        as stale)."""
        refs = [s.ref for s in self.slots.values()]
        refs += [s.ref for s in self.dying.values()]
        done = dict.fromkeys([*self.unacked, *((r.task_id, r.attempt) for r, _ in self.finished)])
        return refs + [TaskRef(task_id=t, attempt=a) for (t, a) in done]

    def ready_libraries(self) -> list[str]:
        return [n for n, lib in self.libraries.items() if lib.state is LibraryState.READY]

    def wake_at(self) -> float | None:
        """When the core wants its next tick (``time.monotonic`` terms), if sooner than the
        service's own rhythm: an update to send, a call start to report, a drain to ask for."""
        if not self.registered:
            return None
        if self._news():
            return self.last_update + UPDATE_WINDOW if self.running else -math.inf
        if self.call_starts:
            return self.call_starts[0][0] + CALL_START_DELAY
        return -math.inf if self.drain_pending else None

    # ------------------------------------------------------------------ the loop's turn

    def _tick(self, now: float) -> None:
        self.now = now
        self._start_runnable(now)
        if self.drain_pending and self.registered:
            self.drain_pending = False
            self.out.append(SendDrain())
        self._flush(now)
        if self.busy:  # (idle_since is None: an assignment reset it)
            return
        if self.idle_since is None:
            self.idle_since = now
        if not self.registered:
            if self.draining and not self.unacked and not self.finished:
                self.out.append(Exit(0))  # signalled holding nothing: nothing to hand over, nobody to tell
            return
        if self.draining:  # (nothing runs: the update above went out in full)
            self.out += [SendGoodbye(reason="drained"), Exit(0)]
        elif self.idle_timeout and now - self.idle_since > self.idle_timeout:
            log.info("idle for %.0fs, leaving", self.idle_timeout)
            self.out += [SendGoodbye(reason="idle timeout"), Exit(0)]

    def _active(self) -> None:
        """Something happened: the idle clock starts again at the next tick."""
        self.idle_since = None

    def _welcomed(self) -> None:
        self.registered = True
        if self.unacked:  # results the manager may not have recorded
            self.finished.extend(self.unacked.values())
            self.unacked.clear()
        if self.draining:
            self.drain_pending = True

    def _term(self) -> None:
        if self.draining:
            log.warning("second signal, leaving now")
            self.out.append(Exit(0))
            return
        log.info("signalled: draining")
        self.draining = self.drain_pending = True

    # ------------------------------------------------------------------ tasks

    def _accept(self, a: Assignment, payload: bytes) -> None:
        tid = a.spec.id
        old = self.slots.get(tid)
        if old is not None:
            if old.assignment.attempt == a.attempt:
                log.warning("task %s attempt %d dispatched twice; ignored", tid, a.attempt)
                return
            self._kill(old.ref)  # superseded by a newer attempt
        slot = Slot(a, payload)
        self.slots[tid] = slot
        self._active()
        if a.spec.inputs:
            self._pin(a.spec.inputs)
            stages = {s.cache_name: s for s in a.stage}
            for b in a.spec.inputs:
                if b.cache_name is not None and not self._obtain(b, stages):
                    slot.missing.add(b.cache_name)
                    self.waiting.setdefault(b.cache_name, []).append(tid)
        if not slot.missing:  # (one waiting for inputs joins the queue when the last arrives)
            self.queue.append(tid)

    def _obtain(self, b: FileBinding, stages: Mapping[CacheName, StageIn]) -> bool:
        """Whether ``b`` is in the cache; if not, have it fetched or made."""
        name = b.cache_name
        assert name is not None
        stage = stages.get(name)
        if self.cache.sound(name, stage.checksum if stage is not None else None):
            self.out.append(Adopt(name, b.cache))
            return True
        if b.kind in (FileKind.UNTAR, FileKind.MINITASK):  # made here, from its parts
            self.out.append(Derive(b))
            for part in parts_of(b):
                self._obtain(part, stages)
        else:
            stage = stage or StageIn(cache_name=name, sources=[FileSource(kind="manager")])
            self.out.append(Fetch(stage, wanted_mode(b)))
        return False

    def _start_runnable(self, now: float) -> None:
        if not self.queue:
            return
        kept: list[TaskId] = []
        queue, misfits = self.queue, 0
        while queue:  # (only tasks whose inputs are all here are in the queue)
            tid = queue.popleft()
            slot = self.slots.get(tid)
            if slot is None or slot.state is not SlotState.QUEUED or slot.missing:
                continue  # killed, failed, or a second entry of a re-sent task
            if not self.used.room_for(slot.assignment.spec.resources, self.resources):
                kept.append(tid)
                misfits += 1
                if misfits >= BACKFILL:  # the rest wait their turn: a tick never walks them all
                    break
                continue
            self._start(slot, now)
        queue.extendleft(reversed(kept))  # back at the head, in their order

    def _start(self, slot: Slot, now: float) -> None:
        a = slot.assignment
        payload, slot.payload = slot.payload, b""
        if a.spec.kind == TaskKind.CALL:  # calls hold their library's slots, not the worker's cores
            slot.state = SlotState.CALLING
            self.call_starts.append((now, a.spec.id, a.attempt))
            if a.spec.library not in self.libraries:
                self._call_failed(slot, f"library {a.spec.library!r} is not running on this worker")
                return
            self.out.append(StartCall(a, payload))
            return
        slot.state = SlotState.RUNNING
        self.used.add(a.spec.resources)
        self.running += 1
        self.started.append(slot.ref)
        self.out.append(StartProcess(a, payload))

    def _process_exited(self, e: ProcessExited) -> None:
        self.new_cached += e.cached
        self.evicted += e.evicted
        res = e.result
        slot = self.slots.get(res.task_id)
        if slot is not None and slot.assignment.attempt == res.attempt and slot.state is SlotState.RUNNING:
            del self.slots[res.task_id]
            self.finished.append((res, list(e.frames)))
        else:
            slot = self.dying.pop((res.task_id, res.attempt), None)  # killed: nobody wants its result
            if slot is None:
                log.warning(
                    "task %s attempt %d: exit of a process not started here", res.task_id, res.attempt
                )
                return
        self.running -= 1
        self.used.remove(slot.assignment.spec.resources)
        self._release_inputs(slot.assignment)

    def _output_grew(self, e: OutputGrew) -> None:
        """New content of a watched output goes with the next update (while its task runs)."""
        slot = self.slots.get(e.task_id)
        if slot is None or slot.assignment.attempt != e.attempt or slot.state is not SlotState.RUNNING:
            return
        piece = WatchedPiece(
            task_id=e.task_id, attempt=e.attempt, remote_name=e.remote_name, offset=e.offset, frame=0
        )
        self.watched.append((piece, e.data))

    def _kill(self, ref: TaskRef) -> None:
        slot = self.slots.get(ref.task_id)
        if slot is None or slot.assignment.attempt != ref.attempt:
            return
        del self.slots[ref.task_id]
        if slot.state is SlotState.RUNNING:  # its inputs stay pinned until the process has exited
            self.dying[(ref.task_id, ref.attempt)] = slot
            self.out.append(KillProcess(ref.task_id, ref.attempt))
            return
        if (
            slot.state is SlotState.CALLING
        ):  # a call in a library cannot be interrupted: its result is dropped
            self.out.append(CancelCall(slot.assignment.spec.library or "", ref.task_id))
            self.call_starts = [c for c in self.call_starts if (c[1], c[2]) != (ref.task_id, ref.attempt)]
        self._release_inputs(slot.assignment)  # a queued task never started

    def _fail_now(self, slot: Slot, outcome: Outcome, error: str) -> None:
        a = slot.assignment
        del self.slots[a.spec.id]
        self._release_inputs(a)
        self.finished.append(
            (AttemptResult(task_id=a.spec.id, attempt=a.attempt, outcome=outcome, error=error), [])
        )

    # ------------------------------------------------------------------ calls

    def _call_failed(self, slot: Slot, why: str) -> None:
        a = slot.assignment
        res = AttemptResult(task_id=a.spec.id, attempt=a.attempt, outcome=Outcome.LIBRARY_ERROR, error=why)
        self._call_ended(slot, res, ())

    def _call_result(self, res: AttemptResult, frames: Sequence[bytes]) -> None:
        slot = self.slots.get(res.task_id)
        if slot is None or slot.assignment.attempt != res.attempt or slot.state is not SlotState.CALLING:
            return  # killed: nobody wants it
        self._call_ended(slot, res, frames)

    def _call_ended(self, slot: Slot, res: AttemptResult, frames: Sequence[bytes]) -> None:
        """A call's result (or failure) is in: its inputs are free; a value to keep goes to
        the cache first (the result is reported once it is there: ValueKept)."""
        a = slot.assignment
        del self.slots[a.spec.id]
        self._release_inputs(a)
        kept = value_output(a.spec.outputs) if res.outcome == Outcome.SUCCESS and frames else None
        if kept is not None:
            self.out.append(KeepValue(res, frames[0], kept))
        elif frames and res.output_frame is not None and len(frames[res.output_frame]) > self.inline_max:
            self.out.append(SpillValue(res, frames[res.output_frame]))  # too large for a message
        else:
            self.finished.append((res, list(frames)))

    def _value_kept(self, e: ValueKept) -> None:
        self.evicted += e.evicted
        if e.cached is not None:
            self.new_cached.append(e.cached)
        self.finished.append((e.result, []))

    def _settle_call_starts(self, now: float) -> None:
        """Report the start of calls still running after CALL_START_DELAY (or along with an
        update that goes out anyway); a call that has finished needs no start report."""
        if self.finished:
            done = {(r.task_id, r.attempt) for r, _ in self.finished}
            self.call_starts = [c for c in self.call_starts if (c[1], c[2]) not in done]
        if not self.call_starts:
            return
        if self._news() or now - self.call_starts[0][0] >= CALL_START_DELAY:
            self.started += [TaskRef(task_id=t, attempt=a) for _, t, a in self.call_starts]
            self.call_starts = []

    # ------------------------------------------------------------------ files

    def _files_arrived(self, e: FilesArrived) -> None:
        self.transfers += e.transfers
        self.evicted += e.evicted
        self.new_cached += e.cached
        if self.lib_waiting:
            self._library_inputs_arrived(e.present)
        for name in e.present:  # (an index by name: a task of 10,000 inputs costs O(inputs))
            for tid in self.waiting.pop(name, ()):
                slot = self.slots.get(tid)
                if slot is not None and name in slot.missing:
                    slot.missing.discard(name)
                    if not slot.missing and slot.state is SlotState.QUEUED:
                        self.queue.append(tid)

    def _fetch_failed(self, failures: Sequence[tuple[CacheName, str]]) -> None:
        """Tasks and libraries waiting for a file that could not be had fail; nothing else does."""
        for name, why in failures:
            for lname in self.lib_waiting.pop(name, ()):
                why_lib = f"its input {name} could not be fetched or made: {why}"
                self._remove_library(lname, why_lib, error=why_lib)
            for tid in self.waiting.pop(name, ()):
                slot = self.slots.get(tid)
                if slot is not None and slot.state is SlotState.QUEUED and name in slot.missing:
                    self._fail_now(
                        slot, Outcome.INPUT_MISSING, f"input {name} could not be fetched or made: {why}"
                    )

    def _forget(self, names: Sequence[CacheName]) -> None:
        for name in dict.fromkeys(names):
            if self.pins.get(name):
                self.doomed.add(name)  # a task reads it: deleted when the last one ends
            else:
                self._drop(name)

    def _pin(self, inputs: Sequence[FileBinding]) -> None:
        pins = self.pins
        for b in walk_bindings(inputs):  # inputs and what they are made from stay
            if b.cache_name is not None:
                pins[b.cache_name] = pins.get(b.cache_name, 0) + 1

    def _release_inputs(self, a: Assignment) -> None:
        """The task no longer needs its inputs: unpin them; drop task-level and undeclared ones."""
        self._release(a.spec.inputs)

    def _release(self, inputs: Sequence[FileBinding]) -> None:
        if not inputs:
            return
        pins = self.pins
        for b in walk_bindings(inputs):
            name = b.cache_name
            if name is None:
                continue
            n = pins.get(name, 0) - 1
            if n > 0:
                pins[name] = n
                continue
            pins.pop(name, None)
            if b.cache == CacheLevel.TASK or name in self.doomed:
                self._drop(name)

    def _drop(self, name: CacheName) -> None:
        self.doomed.discard(name)
        if self.cache.has(name):
            self.out.append(DeleteFromCache(name))
            self.evicted.append(name)

    # ------------------------------------------------------------------ libraries

    def _install(self, spec: LibrarySpec, payload: bytes) -> None:
        old = self.libraries.get(spec.name)
        if old is not None:  # starting or ready already
            if old.state is LibraryState.READY:
                self.out.append(SendLibraryStatus(spec.name, "ready"))
            return
        lib = self.libraries[spec.name] = Library(spec, payload=payload)
        self.used.add(spec.resources)
        self._pin(spec.inputs)
        for b in spec.inputs:  # its inputs, in its working directory: it starts once they are here
            if b.cache_name is not None and not self._obtain(b, {}):
                lib.missing.add(b.cache_name)
                self.lib_waiting.setdefault(b.cache_name, []).append(spec.name)
        if not lib.missing:
            lib.payload = b""
            self.out.append(StartLibrary(spec, payload))

    def _library_ready(self, name: str) -> None:
        self._active()
        lib = self.libraries.get(name)
        if lib is not None:
            lib.state = LibraryState.READY
            self.out.append(SendLibraryStatus(name, "ready"))

    def _library_died(self, e: LibraryDied) -> None:
        self._active()
        lib = self.libraries.get(e.name)
        if lib is None:
            return
        for res in e.failed:
            self._call_result(res, ())
        if lib.state is LibraryState.READY and e.may_restart:
            lib.state = LibraryState.STARTING  # the calls still queued go to the new process
            self.out.append(RestartLibrary(e.name))
        else:
            self._remove_library(e.name, e.why, error=f"{e.why}\n{e.log_tail}")

    def _remove_library(self, name: str, why: str, error: str | None = None) -> None:
        lib = self.libraries.pop(name, None)
        if lib is None:
            return
        self.out.append(StopLibrary(name))
        calls = [
            s
            for s in self.slots.values()
            if s.state is SlotState.CALLING and s.assignment.spec.library == name
        ]
        for slot in calls:
            self._call_failed(slot, f"library {name!r} is gone from this worker: {why}")
        self.used.remove(lib.spec.resources)
        self._release(lib.spec.inputs)
        self.out.append(SendLibraryStatus(name, "failed" if error else "gone", error))

    def _library_inputs_arrived(self, present: Sequence[CacheName]) -> None:
        for name in present:
            for lname in self.lib_waiting.pop(name, ()):
                lib = self.libraries.get(lname)
                if lib is None or name not in lib.missing:
                    continue
                lib.missing.discard(name)
                if not lib.missing:
                    payload, lib.payload = lib.payload, b""
                    self.out.append(StartLibrary(lib.spec, payload))

    # ------------------------------------------------------------------ reporting

    def _news(self) -> bool:
        return bool(
            self.started or self.finished or self.new_cached or self.transfers or self.evicted or self.watched
        )

    def _flush(self, now: float, *, force: bool = False) -> None:
        """Everything that started or finished since the last update, in one WorkerUpdate."""
        if not self.registered:
            return
        if self.call_starts:
            self._settle_call_starts(now)
        if not self._news():
            return
        # Coalesce under load: while processes still run here, send at most one update per
        # UPDATE_WINDOW; an idle worker (or a first result) reports at once.
        if not force and self.running and now - self.last_update < UPDATE_WINDOW:
            return
        self.last_update = now
        batches: list[tuple[list[AttemptResult], list[bytes]]] = [([], [])]
        for res, fr in self.finished:
            results, frames = batches[-1]
            size = sum(map(len, fr))
            if results and sum(map(len, frames)) + size > UPDATE_BYTES:  # the next message
                batches.append(([], []))
                results, frames = batches[-1]
            results.append(_shifted(res, len(frames)))
            frames += fr
            self.unacked[(res.task_id, res.attempt)] = (res, fr)
        first = batches[0]
        watched = []
        for piece, data in self.watched:  # (a piece is at most MAX_PIECE: they go with the first)
            watched.append(replace(piece, frame=len(first[1])))
            first[1].append(data)
        update = WorkerUpdate(
            started=self.started,
            results=first[0],
            cached=self.new_cached,
            evicted=self.evicted,
            transfers=self.transfers,
            watched=watched,
        )
        self.out.append(SendUpdate(update, first[1]))
        for results, frames in batches[1:]:
            self.out.append(SendUpdate(WorkerUpdate(results=results), frames))
        self.started, self.finished, self.new_cached = [], [], []
        self.transfers, self.evicted, self.watched = [], [], []


def wanted_mode(b: FileBinding) -> int | None:
    """The mode a task sees its input with: the one the client set, else TaskVine's 0755 for
    buffers and URLs (scripts are run as ``./x``); None: as the file came."""
    if b.mode is not None:
        return b.mode
    return 0o755 if b.kind in (FileKind.BUFFER, FileKind.URL) else None


def parts_of(b: FileBinding) -> list[FileBinding]:
    """What a file made here is made from: an untar's archive, a minitask's inputs."""
    if b.source is not None:
        return [b.source]
    return list(b.mini.inputs) if b.mini is not None else []


def _shifted(res: AttemptResult, base: int) -> AttemptResult:
    """``res`` with its frame indexes moved past the ``base`` frames of earlier results."""
    if not base:
        return res
    if res.outputs:
        return replace(
            res,
            output_frame=None if res.output_frame is None else res.output_frame + base,
            outputs=[o if o.frame is None else replace(o, frame=o.frame + base) for o in res.outputs],
        )
    if res.output_frame is not None:
        return replace(res, output_frame=res.output_frame + base)
    return res
