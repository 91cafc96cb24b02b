"""The worker core, driven without processes, sockets or files: events in, instructions out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import (
    VALUE_FILE,
    Assignment,
    AttemptResult,
    CacheLevel,
    FileBinding,
    FileKind,
    FileSource,
    LibrarySpec,
    Outcome,
    OutputFile,
    StageIn,
    TaskKind,
    TaskRef,
    TaskSpec,
    TransferRecord,
)
from kubevine.resources import Resources
from kubevine.worker import events as ev
from kubevine.worker.core import CALL_START_DELAY, UPDATE_WINDOW, WorkerCore
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
    StartCall,
    StartProcess,
    StopLibrary,
)

T = TypeVar("T")


class FakeCache:
    """The cache as the core sees it: a set of names that are there and intact."""

    def __init__(self, *names: str) -> None:
        self.names = {CacheName(n) for n in names}

    def sound(self, name: CacheName, expected: str | None = None) -> bool:
        return name in self.names

    def has(self, name: CacheName) -> bool:
        return name in self.names


def new_core(
    cores: float = 2, memory: int = 1000, cache: FakeCache | None = None, idle: float = 0.0
) -> WorkerCore:
    core = WorkerCore(
        Resources(cores=cores, memory=memory, disk=1000), cache or FakeCache(), now=0.0, idle_timeout=idle
    )
    core.handle(ev.Welcomed())
    return core


def inp(name: str, level: CacheLevel = CacheLevel.WORKFLOW, kind: FileKind = FileKind.LOCAL) -> FileBinding:
    return FileBinding(cache_name=CacheName(name), remote_name=f"in-{name}", kind=kind, cache=level)


def task(
    tid: int,
    cores: float = 1,
    memory: int = 0,
    inputs: Iterable[FileBinding] = (),
    attempt: int = 1,
    kind: TaskKind = TaskKind.COMMAND,
    library: str | None = None,
    outputs: Iterable[FileBinding] = (),
) -> ev.TasksAssigned:
    spec = TaskSpec(
        id=TaskId(tid),
        kind=kind,
        command="true" if kind == TaskKind.COMMAND else None,
        library=library,
        function="f" if library else None,
        resources=Resources(cores=cores, memory=memory),
        inputs=list(inputs),
        outputs=list(outputs),
    )
    return ev.TasksAssigned([Assignment(spec=spec, attempt=attempt)], [b"payload"])


def call(tid: int, library: str = "lib", outputs: Iterable[FileBinding] = ()) -> ev.TasksAssigned:
    return task(tid, cores=0, kind=TaskKind.CALL, library=library, outputs=outputs)


def exited(tid: int, outcome: Outcome = Outcome.SUCCESS, attempt: int = 1, **kw: object) -> ev.ProcessExited:
    return ev.ProcessExited(AttemptResult(task_id=TaskId(tid), attempt=attempt, outcome=outcome), **kw)  # type: ignore[arg-type]


def returned(tid: int, value: bytes = b"v") -> ev.CallsReturned:
    res = AttemptResult(task_id=TaskId(tid), attempt=1, outcome=Outcome.SUCCESS, output_frame=0)
    return ev.CallsReturned([(res, [value])])


def of(out: list[Instruction], cls: type[T]) -> list[T]:
    return [i for i in out if isinstance(i, cls)]


def started(out: list[Instruction]) -> list[int]:
    """Tasks whose process or call the core started."""
    return [i.assignment.spec.id for i in out if isinstance(i, StartProcess | StartCall)]


def update(out: list[Instruction]) -> SendUpdate | None:
    ups = of(out, SendUpdate)
    assert len(ups) <= 1
    return ups[0] if ups else None


def reported(out: list[Instruction]) -> dict[int, Outcome]:
    up = update(out)
    return {} if up is None else {r.task_id: r.outcome for r in up.update.results}


def with_library(core: WorkerCore, name: str = "lib") -> None:
    core.handle(ev.InstallRequested(LibrarySpec(name=name, functions=["f"], resources=Resources(cores=0))))
    core.handle(ev.LibraryReady(name))


# ------------------------------------------------------------------ starting


def test_a_task_waits_for_its_inputs_and_starts_when_they_arrive() -> None:
    core = new_core(cache=FakeCache("file-here"))
    out = core.handle(task(1, inputs=[inp("file-here"), inp("file-away")]))
    assert [i.name for i in of(out, Adopt)] == ["file-here"]  # found in the cache
    assert [i.stage.cache_name for i in of(out, Fetch)] == ["file-away"]  # the other is fetched
    assert started(core.handle(ev.Tick(1.0))) == []
    core.handle(ev.FilesArrived(present=[CacheName("file-other")]))
    assert started(core.handle(ev.Tick(1.1))) == []
    core.handle(ev.FilesArrived(present=[CacheName("file-away")]))
    assert started(core.handle(ev.Tick(1.2))) == [1]


def test_a_staged_input_is_fetched_from_the_sources_the_manager_named() -> None:
    core = new_core()
    stage = StageIn(
        cache_name=CacheName("file-x"),
        sources=[FileSource(kind="peer", address="10.0.0.2:9000")],
        checksum="ab",
    )
    a = task(1, inputs=[inp("file-x")])
    out = core.handle(ev.TasksAssigned([a.assignments[0].model_copy(update={"stage": [stage]})], [b""]))
    assert [i.stage for i in of(out, Fetch)] == [stage]
    out = core.handle(task(2, inputs=[inp("file-y")]))  # not staged: the manager has it
    assert [s.kind for i in of(out, Fetch) for s in i.stage.sources] == ["manager"]


def test_an_archive_to_unpack_is_made_here_from_its_fetched_archive() -> None:
    core = new_core()
    archive = inp("file-archive")
    untar = FileBinding(cache_name=CacheName("untar-a"), remote_name="d", kind=FileKind.UNTAR, source=archive)
    out = core.handle(task(1, inputs=[untar]))
    assert [i.binding.cache_name for i in of(out, Derive)] == ["untar-a"]
    assert [i.stage.cache_name for i in of(out, Fetch)] == ["file-archive"]
    assert core.pins == {"untar-a": 1, "file-archive": 1}  # both stay while the task needs them
    core.handle(ev.FilesArrived(present=[CacheName("file-archive")]))
    assert started(core.handle(ev.Tick(1.0))) == []  # the archive alone does not do
    core.handle(ev.FilesArrived(present=[CacheName("untar-a")], cached=[CacheName("untar-a")]))
    assert started(core.handle(ev.Tick(1.1))) == [1]


def test_a_queued_task_starts_only_when_its_cores_and_memory_are_free() -> None:
    core = new_core(cores=2, memory=1000)
    for t in (
        task(1, cores=2),
        task(2, cores=1),
        task(3, cores=1, memory=600),
        task(4, cores=0.5, memory=600),
    ):
        core.handle(t)
    assert started(core.handle(ev.Tick(1.0))) == [1]  # both cores taken
    assert started(core.handle(ev.Tick(1.1))) == []
    core.handle(exited(1))
    assert started(core.handle(ev.Tick(1.2))) == [2, 3]  # both cores taken again
    core.handle(exited(2))
    assert started(core.handle(ev.Tick(1.3))) == []  # a core is free, the memory is not
    core.handle(exited(3))
    assert started(core.handle(ev.Tick(1.4))) == [4]


def test_a_task_dispatched_twice_runs_once() -> None:
    core = new_core(cache=FakeCache("file-x"))
    core.handle(task(1, inputs=[inp("file-x")]))
    core.handle(task(1, inputs=[inp("file-x")]))
    assert started(core.handle(ev.Tick(1.0))) == [1]
    assert core.pins == {"file-x": 1}
    core.handle(exited(1))
    assert core.pins == {}


# ------------------------------------------------------------------ killing


def test_a_killed_queued_task_never_starts_and_releases_its_pins() -> None:
    core = new_core(cache=FakeCache("file-scratch"))
    core.handle(task(1, inputs=[inp("file-away"), inp("file-scratch", CacheLevel.TASK)]))
    assert core.pins == {"file-away": 1, "file-scratch": 1}
    out = core.handle(ev.KillRequested([TaskRef(task_id=TaskId(1), attempt=1)]))
    assert core.pins == {}
    assert [i.name for i in of(out, DeleteFromCache)] == ["file-scratch"]  # a task-level input goes with it
    core.handle(ev.FilesArrived(present=[CacheName("file-away")]))
    out = core.handle(ev.Tick(1.0))
    assert started(out) == [] and reported(out) == {}  # never started, and nothing to report
    assert core.held() == []


def test_a_kill_for_another_attempt_is_ignored() -> None:
    core = new_core()
    core.handle(task(1, attempt=2))
    core.handle(ev.KillRequested([TaskRef(task_id=TaskId(1), attempt=1)]))
    assert started(core.handle(ev.Tick(1.0))) == [1]


def test_a_killed_running_task_holds_its_cores_until_its_process_exits_and_is_not_reported() -> None:
    core = new_core(cores=1)
    core.handle(task(1))
    core.handle(task(2))
    assert started(core.handle(ev.Tick(1.0))) == [1]
    out = core.handle(ev.KillRequested([TaskRef(task_id=TaskId(1), attempt=1)]))
    assert [(i.task_id, i.attempt) for i in of(out, KillProcess)] == [(1, 1)]
    assert started(core.handle(ev.Tick(1.1))) == []  # still running: its core is not free
    core.handle(exited(1, Outcome.EXIT_NONZERO))
    out = core.handle(ev.Tick(1.2))
    assert started(out) == [2]
    assert 1 not in reported(out)


def test_a_new_attempt_can_queue_while_the_killed_one_is_still_exiting() -> None:
    core = new_core(cores=1)
    core.handle(task(1, attempt=1))
    core.handle(ev.Tick(1.0))
    core.handle(ev.KillRequested([TaskRef(task_id=TaskId(1), attempt=1)]))
    core.handle(task(1, attempt=2))
    assert started(core.handle(ev.Tick(1.1))) == []
    core.handle(exited(1, Outcome.EXIT_NONZERO, attempt=1))
    out = core.handle(ev.Tick(1.2))
    assert started(out) == [1] and of(out, StartProcess)[0].assignment.attempt == 2
    core.handle(exited(1, attempt=2))
    assert [(r.task_id, r.attempt) for r in update(core.handle(ev.Tick(1.3))).update.results] == [(1, 2)]  # type: ignore[union-attr]


# ------------------------------------------------------------------ results


def test_a_result_is_kept_until_acknowledged_and_reported_again_after_a_new_welcome() -> None:
    core = new_core()
    core.handle(task(1))
    core.handle(task(2))
    core.handle(ev.Tick(1.0))
    core.handle(exited(1))
    core.handle(exited(2, Outcome.EXIT_NONZERO))
    assert reported(core.handle(ev.Tick(1.1))) == {1: Outcome.SUCCESS, 2: Outcome.EXIT_NONZERO}
    core.handle(ev.ResultsAcked([TaskRef(task_id=TaskId(1), attempt=1)]))
    assert core.held() == [TaskRef(task_id=TaskId(2), attempt=1)]  # named in the next hello
    core.handle(ev.Disconnected())
    assert update(core.handle(ev.Tick(2.0))) is None
    core.handle(ev.Welcomed())
    assert reported(core.handle(ev.Tick(2.1))) == {2: Outcome.EXIT_NONZERO}  # only the unacknowledged one
    core.handle(ev.ResultsAcked([TaskRef(task_id=TaskId(2), attempt=1)]))
    core.handle(ev.Welcomed())
    assert update(core.handle(ev.Tick(2.2))) is None
    assert core.held() == []


def test_results_travel_in_one_update_with_their_frames_renumbered() -> None:
    core = new_core()
    core.handle(task(1))
    core.handle(task(2))
    core.handle(ev.Tick(1.0))
    r1 = AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS, output_frame=0)
    out2 = OutputFile(remote_name="o", frame=1)
    r2 = AttemptResult(task_id=TaskId(2), attempt=1, outcome=Outcome.SUCCESS, output_frame=0, outputs=[out2])
    core.handle(ev.ProcessExited(r1, [b"stdout-1"]))
    core.handle(ev.ProcessExited(r2, [b"stdout-2", b"output-2"]))
    up = update(core.handle(ev.Tick(1.1)))
    assert up is not None
    assert up.frames == [b"stdout-1", b"stdout-2", b"output-2"]
    res = {r.task_id: r for r in up.update.results}
    assert up.frames[res[TaskId(1)].output_frame] == b"stdout-1"  # type: ignore[index]
    assert up.frames[res[TaskId(2)].output_frame] == b"stdout-2"  # type: ignore[index]
    assert up.frames[res[TaskId(2)].outputs[0].frame] == b"output-2"  # type: ignore[index]


def test_files_that_arrived_and_left_are_reported_once() -> None:
    core = new_core()
    rec = TransferRecord(cache_name=CacheName("file-a"), source="peer", bytes=3)
    core.handle(
        ev.FilesArrived(cached=[CacheName("file-a")], evicted=[CacheName("file-old")], transfers=[rec])
    )
    up = update(core.handle(ev.Tick(1.0)))
    assert up is not None
    assert (up.update.cached, up.update.evicted, up.update.transfers) == (["file-a"], ["file-old"], [rec])
    assert update(core.handle(ev.Tick(1.1))) is None
    failed = TransferRecord(cache_name=CacheName("file-b"), source="peer", ok=False, error="timeout")
    core.handle(ev.FilesArrived(transfers=[failed]))  # a failed attempt alone is worth an update
    up = update(core.handle(ev.Tick(1.2)))
    assert up is not None and up.update.transfers == [failed]


def test_updates_coalesce_within_the_window_while_processes_run() -> None:
    core = new_core(cores=3)
    for i in (1, 2, 3):
        core.handle(task(i))
    up = update(core.handle(ev.Tick(1.0)))
    assert up is not None and len(up.update.started) == 3  # a first report goes at once
    w = UPDATE_WINDOW
    core.handle(exited(1))
    assert reported(core.handle(ev.Tick(1.0 + w * 0.5))) == {}  # 2 and 3 still run: wait
    assert core.wake_at() == 1.0 + w
    assert reported(core.handle(ev.Tick(1.0 + w * 1.01))) == {1: Outcome.SUCCESS}
    core.handle(exited(2))
    assert reported(core.handle(ev.Tick(1.0 + w * 1.5))) == {}  # 3 still runs
    core.handle(exited(3))
    # nothing runs any more: what there is goes at once, window or not
    assert reported(core.handle(ev.Tick(1.0 + w * 1.6))) == {2: Outcome.SUCCESS, 3: Outcome.SUCCESS}


def test_an_input_missing_fails_exactly_the_tasks_waiting_on_it() -> None:
    core = new_core(cores=4, cache=FakeCache("file-here"))
    core.handle(task(1, inputs=[inp("file-gone")]))
    core.handle(task(2, inputs=[inp("file-other")]))
    core.handle(task(3, inputs=[inp("file-other"), inp("file-gone")]))
    core.handle(task(4, inputs=[inp("file-here")]))
    core.handle(ev.FetchFailed([(CacheName("file-gone"), "no source has it")]))
    out = core.handle(ev.Tick(1.0))
    assert started(out) == [4]
    assert reported(out) == {1: Outcome.INPUT_MISSING, 3: Outcome.INPUT_MISSING}
    assert "no source has it" in (update(out).update.results[0].error or "")  # type: ignore[union-attr]
    assert core.pins == {"file-other": 1, "file-here": 1}  # task 2 and 4 keep theirs
    core.handle(ev.FilesArrived(present=[CacheName("file-other")]))
    assert started(core.handle(ev.Tick(1.1))) == [2]


# ------------------------------------------------------------------ files


def test_a_file_undeclared_while_a_running_task_reads_it_is_deleted_when_that_task_ends() -> None:
    core = new_core(cache=FakeCache("file-used", "file-idle"))
    core.handle(task(1, inputs=[inp("file-used")]))
    core.handle(ev.Tick(1.0))
    out = core.handle(ev.ForgetRequested([CacheName("file-used"), CacheName("file-idle")]))
    assert [i.name for i in of(out, DeleteFromCache)] == ["file-idle"]  # nobody reads it: at once
    out = core.handle(exited(1))
    assert [i.name for i in of(out, DeleteFromCache)] == ["file-used"]
    up = update(core.handle(ev.Tick(1.1)))
    assert up is not None and sorted(up.update.evicted) == ["file-idle", "file-used"]


def test_a_file_read_by_two_tasks_goes_after_the_second_ends() -> None:
    core = new_core(cache=FakeCache("file-used"))
    core.handle(task(1, inputs=[inp("file-used", CacheLevel.TASK)]))
    core.handle(task(2, inputs=[inp("file-used", CacheLevel.TASK)]))
    core.handle(ev.Tick(1.0))
    assert of(core.handle(exited(1)), DeleteFromCache) == []
    assert [i.name for i in of(core.handle(exited(2)), DeleteFromCache)] == ["file-used"]


# ------------------------------------------------------------------ calls and libraries


def test_a_call_reports_its_start_only_after_the_delay_unless_an_update_goes_anyway() -> None:
    core = new_core()
    with_library(core)
    core.handle(call(1))
    out = core.handle(ev.Tick(1.0))
    assert started(out) == [1] and update(out) is None  # handed over, not reported yet
    assert update(core.handle(ev.Tick(1.0 + CALL_START_DELAY / 2))) is None
    up = update(core.handle(ev.Tick(1.0 + CALL_START_DELAY * 1.01)))
    assert up is not None and [r.task_id for r in up.update.started] == [1]
    # an update that goes anyway (a command's start) carries the call's start at once
    core.handle(call(2))
    core.handle(task(3))
    up = update(core.handle(ev.Tick(2.0)))
    assert up is not None and sorted(r.task_id for r in up.update.started) == [2, 3]


def test_a_call_that_returns_within_the_delay_reports_only_its_result() -> None:
    core = new_core()
    with_library(core)
    core.handle(ev.Tick(0.5))
    core.handle(call(1))
    core.handle(ev.Tick(1.0))
    core.handle(returned(1))
    up = update(core.handle(ev.Tick(1.001)))
    assert up is not None and up.update.started == [] and reported([up]) == {1: Outcome.SUCCESS}
    assert up.frames == [b"v"]


def test_a_call_to_a_library_not_here_fails_and_a_ready_library_is_named_in_the_hello() -> None:
    core = new_core()
    core.handle(call(1, library="missing"))
    out = core.handle(ev.Tick(1.0))
    assert reported(out) == {1: Outcome.LIBRARY_ERROR}
    assert core.ready_libraries() == []
    with_library(core)
    assert core.ready_libraries() == ["lib"]


def test_a_library_that_crashes_fails_its_running_calls_and_restarts_once_ready() -> None:
    core = new_core()
    with_library(core)
    core.handle(call(1))
    core.handle(call(2))
    core.handle(ev.Tick(1.0))
    lost = AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.LIBRARY_ERROR, error="crashed")
    out = core.handle(ev.LibraryDied("lib", "crashed", [lost], may_restart=True))
    assert of(out, RestartLibrary) == [RestartLibrary("lib")] and of(out, StopLibrary) == []
    assert reported(core.handle(ev.Tick(1.1))) == {1: Outcome.LIBRARY_ERROR}  # 2 waits for the new process
    assert core.ready_libraries() == []
    # crashing again before it is ready: given up, the queued call fails, the manager is told
    out = core.handle(ev.LibraryDied("lib", "crashed", [], may_restart=True, log_tail="Traceback"))
    assert of(out, StopLibrary) == [StopLibrary("lib")]
    status = of(out, SendLibraryStatus)
    assert [(s.state, "Traceback" in (s.error or "")) for s in status] == [("failed", True)]
    assert reported(core.handle(ev.Tick(1.2))) == {2: Outcome.LIBRARY_ERROR}


def test_removing_a_library_fails_its_calls_and_frees_its_resources() -> None:
    core = new_core(cores=2)
    core.handle(ev.InstallRequested(LibrarySpec(name="lib", functions=["f"], resources=Resources(cores=2))))
    core.handle(call(1))
    core.handle(task(2, cores=1))
    out = core.handle(ev.Tick(1.0))
    assert started(out) == [1]  # the library holds both cores: the command waits
    out = core.handle(ev.RemoveRequested("lib"))
    assert [(s.name, s.state) for s in of(out, SendLibraryStatus)] == [("lib", "gone")]
    out = core.handle(ev.Tick(1.1))
    assert started(out) == [2] and reported(out) == {1: Outcome.LIBRARY_ERROR}


def test_a_killed_call_is_taken_back_from_its_library_and_its_late_result_is_dropped() -> None:
    core = new_core()
    with_library(core)
    core.handle(call(1))
    core.handle(ev.Tick(1.0))
    out = core.handle(ev.KillRequested([TaskRef(task_id=TaskId(1), attempt=1)]))
    assert of(out, CancelCall) == [CancelCall("lib", TaskId(1))]
    core.handle(returned(1))
    out = core.handle(ev.Tick(2.0))
    assert update(out) is None  # neither its start nor its result


def test_a_value_to_keep_is_stored_first_and_reported_as_the_calls_output() -> None:
    core = new_core()
    with_library(core)
    value = FileBinding(cache_name=CacheName("temp-v"), remote_name=VALUE_FILE, kind=FileKind.TEMP)
    core.handle(call(1, outputs=[value]))
    core.handle(ev.Tick(1.0))
    out = core.handle(returned(1, b"pickled"))
    keep = of(out, KeepValue)
    assert [(k.data, k.binding.cache_name) for k in keep] == [(b"pickled", "temp-v")]
    assert update(core.handle(ev.Tick(1.0001))) is None  # not before it is stored
    stored = keep[0].result.model_copy(
        update={"output_frame": None, "outputs": [OutputFile(remote_name=VALUE_FILE)]}
    )
    core.handle(ev.ValueKept(stored, CacheName("temp-v")))
    up = update(core.handle(ev.Tick(1.001)))
    assert up is not None and up.update.cached == ["temp-v"] and up.frames == []
    assert reported([up]) == {1: Outcome.SUCCESS}


def test_installing_a_library_twice_starts_it_once_and_says_ready_again() -> None:
    core = new_core()
    with_library(core)
    out = core.handle(ev.InstallRequested(LibrarySpec(name="lib", functions=["f"])))
    assert [(s.name, s.state) for s in of(out, SendLibraryStatus)] == [("lib", "ready")]
    assert core.libraries.keys() == {"lib"}


# ------------------------------------------------------------------ leaving


def test_draining_with_no_tasks_says_goodbye() -> None:
    core = new_core()
    core.handle(ev.TermRequested())
    out = core.handle(ev.Tick(1.0))
    assert [type(i) for i in out] == [SendDrain, SendGoodbye, Exit]
    assert of(out, SendGoodbye)[0].reason == "drained"


def test_draining_waits_for_running_tasks_and_reports_them_before_goodbye() -> None:
    core = new_core()
    core.handle(task(1))
    core.handle(ev.Tick(1.0))
    core.handle(ev.TermRequested())
    out = core.handle(ev.Tick(1.1))
    assert of(out, SendDrain) and not of(out, SendGoodbye)
    core.handle(exited(1))
    out = core.handle(ev.Tick(1.2))
    assert [type(i) for i in out] == [SendUpdate, SendGoodbye, Exit]
    assert of(core.handle(ev.Tick(1.3)), SendDrain) == []  # asked once


def test_a_result_finished_while_away_is_named_in_the_next_hello() -> None:
    """The manager restarts while a task runs; it ends before the worker is welcomed again.
    Its hello must name it, or the manager takes the task for lost, runs it again and drops
    the result this worker then reports as stale."""
    core = new_core()
    core.handle(task(1))
    core.handle(ev.Tick(1.0))
    core.handle(ev.Disconnected())
    core.handle(exited(1))
    assert update(core.handle(ev.Tick(1.1))) is None  # nobody to tell yet
    assert core.held() == [TaskRef(task_id=TaskId(1), attempt=1)]
    core.handle(ev.Welcomed())
    assert reported(core.handle(ev.Tick(1.2))) == {1: Outcome.SUCCESS}


def test_a_worker_signalled_before_it_is_welcomed_holding_nothing_leaves_at_once() -> None:
    core = WorkerCore(Resources(cores=1), FakeCache())
    core.handle(ev.TermRequested())
    assert core.handle(ev.Tick(1.0)) == [Exit(0)]  # nothing to hand over, nobody to say goodbye to


def test_a_worker_signalled_while_away_with_a_result_to_hand_over_drains_once_welcomed_again() -> None:
    core = new_core()
    core.handle(task(1))
    core.handle(ev.Tick(1.0))
    core.handle(exited(1))
    assert of(core.handle(ev.Tick(1.1)), SendUpdate)  # sent, not yet acknowledged
    core.handle(ev.Disconnected())  # the manager went away (restarting)
    core.handle(ev.TermRequested())
    assert not of(core.handle(ev.Tick(1.2)), Exit)  # its result would be lost: it waits
    core.handle(ev.Welcomed())
    out = core.handle(ev.Tick(1.3))
    assert of(out, SendDrain) and of(out, SendUpdate)[0].update.results[0].task_id == TaskId(1)


def test_a_second_signal_leaves_at_once() -> None:
    core = new_core()
    core.handle(task(1))
    core.handle(ev.Tick(1.0))
    core.handle(ev.TermRequested())
    assert core.handle(ev.TermRequested()) == [Exit(0)]


def test_released_by_the_manager_reports_then_says_goodbye() -> None:
    core = new_core()
    core.handle(ev.FilesArrived(evicted=[CacheName("file-old")]))
    out = core.handle(ev.Released())
    assert [type(i) for i in out] == [SendUpdate, SendGoodbye, Exit]


def test_an_idle_worker_leaves_after_its_idle_timeout_counted_from_its_last_task() -> None:
    core = new_core(idle=10)
    assert core.handle(ev.Tick(5.0)) == []
    core.handle(task(1))
    core.handle(ev.Tick(6.0))
    core.handle(exited(1))
    core.handle(ev.Tick(8.0))  # idle from here
    assert of(core.handle(ev.Tick(17.9)), SendGoodbye) == []
    out = core.handle(ev.Tick(18.1))
    assert [type(i) for i in out] == [SendGoodbye, Exit]
    assert of(out, SendGoodbye)[0].reason == "idle timeout"


def test_a_task_that_comes_and_goes_between_two_ticks_restarts_the_idle_clock() -> None:
    core = new_core(idle=10)
    core.handle(ev.Tick(9.0))
    core.handle(task(1, inputs=[inp("file-gone")]))
    core.handle(ev.FetchFailed([(CacheName("file-gone"), "gone")]))
    assert of(core.handle(ev.Tick(10.5)), SendGoodbye) == []  # idle since 10.5, not since 0
    assert of(core.handle(ev.Tick(20.6)), SendGoodbye) != []


def test_a_worker_without_idle_timeout_never_leaves_on_its_own() -> None:
    core = new_core(idle=0)
    assert core.handle(ev.Tick(1e6)) == []


def test_the_core_imports_nothing_that_touches_sockets_processes_or_files() -> None:
    import ast
    import sys
    from pathlib import Path

    import kubevine.worker.core

    allowed = {"__future__", "collections", "dataclasses", "enum", "logging", "math", "typing"}
    allowed |= {"kubevine.ids", "kubevine.protocol", "kubevine.resources", "kubevine.worker"}
    allowed |= {f"kubevine.worker.{m}" for m in ("events", "instructions", "states")}
    folder = Path(kubevine.worker.core.__file__).parent
    for module in ("core", "events", "instructions", "states"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert name in allowed or (top in sys.stdlib_module_names and top in allowed), (module, name)


def test_the_tasks_of_one_dispatch_start_in_their_order_as_room_allows() -> None:
    core = new_core(cores=2)
    batch = [task(i).assignments[0] for i in (5, 3, 9)]
    core.handle(ev.TasksAssigned(batch, [b"a", b"b", b"c"]))
    out = core.handle(ev.Tick(1.0))
    assert [(i.assignment.spec.id, i.payload) for i in of(out, StartProcess)] == [(5, b"a"), (3, b"b")]
    core.handle(exited(3))
    assert started(core.handle(ev.Tick(1.1))) == [9]
