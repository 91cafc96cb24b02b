"""The worker core's bounds: no message larger than it may be, no work per arrival that grows
with the number of tasks, inputs placed with the mode a task asked for."""

from __future__ import annotations

import time

from test_worker_core import FakeCache, call, exited, inp, new_core, of, started, task, with_library

from kubevine.ids import CacheName, TaskId
from kubevine.protocol import MAX_MESSAGE, AttemptResult, FileBinding, FileKind, Outcome
from kubevine.worker import events as ev
from kubevine.worker.core import UPDATE_BYTES, WorkerCore, wanted_mode
from kubevine.worker.instructions import Fetch, SendUpdate, SpillValue


def test_results_whose_frames_exceed_a_message_go_in_several_updates() -> None:
    core = new_core(cores=8)
    for tid in range(1, 9):
        core.handle(task(tid))
    core.handle(ev.Tick(1.0))
    big = b"x" * (8 << 20)
    for tid in range(1, 9):  # 8 results of 8 MiB each: 64 MiB, more than one message may carry
        res = AttemptResult(task_id=TaskId(tid), attempt=1, outcome=Outcome.SUCCESS, output_frame=0)
        core.handle(ev.ProcessExited(res, [big]))
    ups = of(core.handle(ev.Tick(2.0)), SendUpdate)
    assert len(ups) > 1
    assert sorted(r.task_id for u in ups for r in u.update.results) == list(range(1, 9))
    for u in ups:
        assert sum(map(len, u.frames)) <= UPDATE_BYTES < MAX_MESSAGE
        for r in u.update.results:  # each result points at its own frame in its own message
            assert r.output_frame is not None and u.frames[r.output_frame] is big


def test_a_call_value_too_large_for_a_message_is_spilled_not_sent() -> None:
    core = new_core()
    with_library(core)
    core.handle(call(1))
    core.handle(ev.Tick(1.0))
    res = AttemptResult(task_id=TaskId(1), attempt=1, outcome=Outcome.SUCCESS, output_frame=0)
    out = core.handle(ev.CallsReturned([(res, [b"v" * (core.inline_max + 1)])]))
    (spill,) = of(out, SpillValue)
    assert len(spill.data) == core.inline_max + 1
    # its result is reported only once it is kept
    assert not [r for u in of(core.handle(ev.Tick(1.1)), SendUpdate) for r in u.update.results]
    kept = res.model_copy(update={"output_frame": None, "output_spill": CacheName("spill-ab")})
    core.handle(ev.ValueKept(kept, CacheName("spill-ab")))
    (up,) = of(core.handle(ev.Tick(1.2)), SendUpdate)
    assert up.update.results[0].output_spill == "spill-ab" and up.frames == []
    assert up.update.cached == ["spill-ab"]


def test_an_arrival_costs_the_same_however_many_tasks_wait() -> None:
    """Each arrival looks only at the tasks waiting for that file (it scanned every task)."""

    def staged(waiting: int) -> float:
        core = WorkerCore(new_core().resources, FakeCache(), now=0.0)
        core.handle(ev.Welcomed())
        for tid in range(waiting):
            core.handle(task(tid + 1, cores=0, inputs=[inp(f"file-{tid}")]))
        t0 = time.perf_counter()
        for tid in range(waiting):
            core.handle(ev.FilesArrived(present=[CacheName(f"file-{tid}")]))
        return (time.perf_counter() - t0) / waiting

    small, large = staged(200), staged(4000)
    assert large < small * 5, (small, large)  # linear in arrivals, not in arrivals x tasks


def test_a_file_that_cannot_be_had_fails_only_the_tasks_waiting_for_it() -> None:
    core = new_core(cores=4)
    core.handle(task(1, inputs=[inp("file-a")]))
    core.handle(task(2, inputs=[inp("file-b")]))
    core.handle(ev.FetchFailed([(CacheName("file-a"), "gone")]))
    core.handle(ev.FilesArrived(present=[CacheName("file-b")]))
    out = core.handle(ev.Tick(1.0))
    assert started(out) == [2]
    (up,) = of(out, SendUpdate)
    assert [(r.task_id, r.outcome) for r in up.update.results] == [(1, Outcome.INPUT_MISSING)]
    core.handle(exited(2))


def test_buffers_and_urls_are_fetched_executable_and_a_set_mode_is_kept() -> None:
    core = new_core()
    out = core.handle(
        task(
            1,
            inputs=[
                inp("buf-a", kind=FileKind.BUFFER),
                inp("url-b", kind=FileKind.URL),
                inp("file-c"),
                FileBinding(cache_name=CacheName("file-d"), remote_name="d", kind=FileKind.LOCAL, mode=0o640),
            ],
        )
    )
    assert {f.stage.cache_name: f.mode for f in of(out, Fetch)} == {
        "buf-a": 0o755,
        "url-b": 0o755,
        "file-c": None,
        "file-d": 0o640,
    }
    assert wanted_mode(FileBinding(remote_name="x", kind=FileKind.LOCAL)) is None


def test_a_library_starts_once_its_own_inputs_are_here_and_fails_if_one_cannot_be_had() -> None:
    from kubevine.protocol import LibrarySpec
    from kubevine.resources import Resources
    from kubevine.worker.instructions import SendLibraryStatus, StartLibrary

    core = new_core()
    spec = LibrarySpec(name="lib", functions=["f"], resources=Resources(cores=0), inputs=[inp("file-t")])
    out = core.handle(ev.InstallRequested(spec, b"code"))
    assert [f.stage.cache_name for f in of(out, Fetch)] == ["file-t"] and of(out, StartLibrary) == []
    assert core.pins == {"file-t": 1}  # kept while the library lives
    (start,) = of(core.handle(ev.FilesArrived(present=[CacheName("file-t")])), StartLibrary)
    assert start.payload == b"code"
    other = LibrarySpec(name="other", functions=["f"], resources=Resources(cores=0), inputs=[inp("file-u")])
    core.handle(ev.InstallRequested(other, b""))
    out = core.handle(ev.FetchFailed([(CacheName("file-u"), "no source")]))
    (status,) = of(out, SendLibraryStatus)
    assert status.name == "other" and status.state == "failed" and "file-u" in (status.error or "")
    assert "file-u" not in core.pins


def test_a_tick_costs_the_same_however_many_tasks_are_queued_behind_a_busy_worker() -> None:
    def tick_cost(queued: int) -> float:
        core = new_core(cores=1)
        for tid in range(queued):
            core.handle(task(tid + 1, cores=1))
        core.handle(ev.Tick(0.5))  # the first starts and takes the only core
        t0 = time.perf_counter()
        for i in range(200):
            core.handle(ev.Tick(1.0 + i))
        return time.perf_counter() - t0

    small, large = tick_cost(50), tick_cost(5000)
    assert large < small * 5, (small, large)  # it walked every queued task on every tick
