"""TaskVine's settings and task constraints in the manager's core, without sockets: m.tune's
names, time_start/time_end, max_forsaken, features, strict inputs, peer transfers off,
library retries and library inputs."""

from __future__ import annotations

from kubevine.ids import CacheName, ClientId, TaskId, WorkerId
from kubevine.manager.core import Core, Settings
from kubevine.manager.instructions import ClientError, SendDispatch, SendInstall, SendKill, SendResults
from kubevine.manager.states import TaskState
from kubevine.protocol import (
    AttemptResult,
    ClientResult,
    FileBinding,
    FileKind,
    LibrarySpec,
    Outcome,
    OutputFile,
    TaskKind,
    TaskRef,
    TaskSpec,
    WorkerInfo,
)
from kubevine.resources import Resources

C = ClientId("c")
NOW = 1_000_000.0


def core_at(now: float = NOW, **settings: object) -> Core:
    core = Core(Settings(prefetch=0, **settings), now=now)  # type: ignore[arg-type]
    core.client_connected(C)
    return core


def worker(
    core: Core, wid: str, cores: float = 1, features: list[str] | None = None, node: str = ""
) -> WorkerId:
    info = WorkerInfo(
        worker_id=WorkerId(wid),
        node=node or f"node-{wid}",
        host=f"host-{wid}",
        pid=1,
        resources=Resources(cores=cores, memory=1000, disk=1000),
        transfer_address=f"{wid}:9000",
        features=features or [],
    )
    core.worker_connected(info)
    return info.worker_id


def cycle(core: Core) -> list[object]:
    core.schedule()
    return list(core.take()[1])


def dispatched(out: list[object]) -> dict[str, list[int]]:
    d: dict[str, list[int]] = {}
    for ins in out:
        if isinstance(ins, SendDispatch):
            d.setdefault(ins.worker, []).extend(a.spec.id for a in ins.tasks)
    return d


def results(out: list[object]) -> dict[int, ClientResult]:
    return {r.task_id: r for ins in out if isinstance(ins, SendResults) for r, _ in ins.results}


def task(i: int, **kw: object) -> TaskSpec:
    return TaskSpec(id=TaskId(i), command="true", **kw)  # type: ignore[arg-type]


def finish(core: Core, wid: WorkerId, tid: int, outputs: list[OutputFile] | None = None) -> None:
    t = core.tasks[TaskId(tid)]
    ref = TaskRef(task_id=TaskId(tid), attempt=t.attempt)
    r = AttemptResult(
        task_id=TaskId(tid), attempt=t.attempt, outcome=Outcome.SUCCESS, exit_code=0, outputs=outputs or []
    )
    core.worker_update(wid, [ref], [r], [])


# ------------------------------------------------------------------ tune


def test_wait_for_workers_holds_dispatch_until_that_many_are_connected_then_lets_go() -> None:
    core = core_at()
    core.tune(C, "wait-for-workers", 2)
    worker(core, "a")
    core.submit(C, [task(1), task(2)], [None, None])
    assert dispatched(cycle(core)) == {}
    worker(core, "b")
    assert dispatched(cycle(core)) in ({"a": [1], "b": [2]}, {"a": [2], "b": [1]})
    assert core.tunables.wait_for_workers == 0  # reached once: over, as in TaskVine


def test_a_setting_the_manager_does_not_have_or_a_bad_value_is_an_error_to_its_client() -> None:
    core = core_at()
    for name, value in (
        ("no-such-knob", 1),
        ("wait-for-workers", -1),
        ("peer-transfers", 2),
        ("worker-source-max-transfers", 0.5),
    ):
        core.tune(C, name, value)
        _, out = core.take()
        (err,) = [i for i in out if isinstance(i, ClientError)]
        assert err.code == "bad_setting" and name in err.message
    core.tune(C, "temp-replica-count", 3)  # accepted
    core.tune(C, "immediate-recovery", 1)
    batch, out = core.take()
    assert not [i for i in out if isinstance(i, ClientError)]
    assert '"immediate_recovery": true' in batch.meta["tunables"]  # kept across manager restarts


def test_worker_source_max_transfers_limits_what_one_peer_serves_at_once() -> None:
    core = core_at()
    a = worker(core, "a")
    names = [CacheName(f"temp-{i}") for i in range(4)]
    outputs = [FileBinding(cache_name=n, remote_name=n, kind=FileKind.TEMP) for n in names]
    core.submit(C, [task(1, outputs=outputs)], [None])
    cycle(core)
    finish(core, a, 1, [OutputFile(remote_name=n, cache_name=n) for n in names])
    core.submit(C, [task(2)], [None])  # keeps a busy: the readers go to b and fetch from a
    assert dispatched(cycle(core)) == {"a": [2]}
    worker(core, "b", cores=8)
    core.tune(C, "worker-source-max-transfers", 2)
    readers = [
        task(10 + i, inputs=[FileBinding(cache_name=n, remote_name="in", kind=FileKind.TEMP)])
        for i, n in enumerate(names)
    ]
    core.submit(C, readers, [None] * 4)
    assert len(dispatched(cycle(core))["b"]) == 2  # two transfers from a at once; the rest wait
    assert core.catalog.busy(a) == 2


def test_a_failing_source_is_trusted_again_after_the_transient_error_interval() -> None:
    core = core_at()
    cat = core.catalog
    for _ in range(3):
        cat.failed_source("w1", NOW)
    cat.forgive(NOW + 100)
    assert cat.failures["w1"] == 3  # not tuned: avoided for good
    core.tune(C, "transient-error-interval", 2)
    core.tick(NOW + 1)
    assert cat.failures["w1"] == 3
    core.tick(NOW + 3)
    assert "w1" not in cat.failures


def test_with_peer_transfers_off_files_come_from_the_manager_and_temps_are_read_where_they_are() -> None:
    core = core_at()
    worker(core, "a")
    worker(core, "b")
    temp = CacheName("temp-x")
    core.submit(
        C, [task(1, outputs=[FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)])], [None]
    )
    (where,) = dispatched(cycle(core))
    other = WorkerId("b" if where == "a" else "a")
    finish(core, WorkerId(where), 1, [OutputFile(remote_name="o", cache_name=temp)])
    buf = CacheName("buf-1")
    core.files_received([buf])
    core.catalog.add(buf, other, f"node-{other}")  # the other worker holds the client file too
    core.tune(C, "peer-transfers", 0)
    inputs = [
        FileBinding(cache_name=temp, remote_name="t", kind=FileKind.TEMP),
        FileBinding(cache_name=buf, remote_name="b", kind=FileKind.BUFFER),
    ]
    core.submit(C, [task(2, inputs=inputs)], [None])
    out = cycle(core)
    assert dispatched(out) == {where: [2]}  # where the temp is, though the other worker is as free
    (stages,) = [a.stage for ins in out if isinstance(ins, SendDispatch) for a in ins.tasks]
    assert [(st.cache_name, [s.kind for s in st.sources]) for st in stages] == [(buf, ["manager"])]


def test_immediate_recovery_remakes_a_lost_temp_nobody_needs_yet() -> None:
    for eager in (False, True):
        core = core_at()
        a = worker(core, "a")
        temp = CacheName("temp-x")
        core.submit(
            C, [task(1, outputs=[FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)])], [None]
        )
        cycle(core)
        finish(core, a, 1, [OutputFile(remote_name="o", cache_name=temp)])
        core.take()
        core.tune(C, "immediate-recovery", int(eager))
        core.worker_lost(a, "killed")
        assert (core.tasks[TaskId(1)].state == TaskState.READY) is eager


# ------------------------------------------------------------------ task constraints


def test_time_start_holds_a_task_back_and_time_end_fails_one_that_did_not_start() -> None:
    core = core_at()
    worker(core, "a")
    core.submit(
        C, [task(1, time_start=NOW + 10), task(2, time_end=NOW + 5), task(3, time_end=NOW - 1)], [None] * 3
    )
    out = cycle(core)
    assert dispatched(out) == {"a": [2]} and results(out)[3].outcome == Outcome.MAX_END_TIME
    core.tick(NOW + 5)
    assert dispatched(cycle(core)) == {}  # task 1: not before its start, though a has room later
    core.submit(C, [task(4, time_end=NOW + 8)], [None])  # a is busy with 2: 4 waits, then its end comes
    cycle(core)
    core.tick(NOW + 8)
    r = results(cycle(core))
    assert r[4].outcome == Outcome.MAX_END_TIME and r[4].attempts == 0
    finish(core, WorkerId("a"), 2)
    core.tick(NOW + 10)
    assert dispatched(cycle(core)) == {"a": [1]}


def test_a_task_on_a_worker_past_its_end_time_is_stopped_if_the_worker_does_not() -> None:
    core = core_at(heartbeat_timeout=30.0)
    worker(core, "a")
    core.submit(C, [task(1, time_end=NOW + 5)], [None])
    cycle(core)
    core.tick(NOW + 6)
    assert core.tasks[TaskId(1)].state == TaskState.DISPATCHED  # the worker's to stop
    core.worker_seen(WorkerId("a"))
    core.tick(NOW + 36)
    out = cycle(core)
    assert results(out)[1].outcome == Outcome.MAX_END_TIME and any(isinstance(i, SendKill) for i in out)


def test_max_forsaken_fails_a_task_lost_with_its_workers_as_forsaken() -> None:
    core = core_at()
    core.submit(C, [task(1, max_forsaken=1), task(2)], [None, None])
    for n in range(2):
        w = worker(core, f"w{n}", cores=2)
        cycle(core)
        core.worker_lost(w, "killed")
    r = results(list(core.take()[1]))
    assert r[1].outcome == Outcome.FORSAKEN and "lost 2 time" in (r[1].error or "")
    assert core.tasks[TaskId(2)].state == TaskState.READY  # the manager's own rule: 5 losses


def test_features_send_a_task_only_to_workers_that_have_them() -> None:
    core = core_at()
    worker(core, "plain", cores=4)
    core.submit(C, [task(1, features=["gpu-x"]), task(2)], [None, None])
    out = cycle(core)
    assert dispatched(out) == {"plain": [2]} and TaskId(1) in core.unschedulable
    worker(core, "special", features=["gpu-x", "other"])
    assert dispatched(cycle(core)) == {"special": [1]}


def test_a_strict_input_runs_where_the_file_is_or_fails_as_fixed_location_missing() -> None:
    core = core_at()
    worker(core, "a")
    worker(core, "b")
    temp = CacheName("temp-x")
    core.submit(
        C, [task(1, outputs=[FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)])], [None]
    )
    (where,) = dispatched(cycle(core))
    finish(core, WorkerId(where), 1, [OutputFile(remote_name="o", cache_name=temp)])
    core.files_received([CacheName("buf-1")])
    strict = FileBinding(cache_name=temp, remote_name="t", kind=FileKind.TEMP, strict=True)
    nowhere = FileBinding(cache_name=CacheName("buf-1"), remote_name="b", kind=FileKind.BUFFER, strict=True)
    core.submit(C, [task(2, inputs=[strict]), task(3, inputs=[nowhere])], [None, None])
    out = cycle(core)
    assert dispatched(out) == {where: [2]}
    assert results(out)[3].outcome == Outcome.FIXED_LOCATION_MISSING


# ------------------------------------------------------------------ libraries


def lib(name: str = "L", inputs: list[FileBinding] | None = None) -> LibrarySpec:
    return LibrarySpec(name=name, functions=["f"], inputs=inputs or [])


def call(i: int, name: str = "L") -> TaskSpec:
    return TaskSpec(id=TaskId(i), kind=TaskKind.CALL, library=name, function="f")


def test_a_library_whose_instances_keep_failing_is_removed_after_max_library_retries() -> None:
    core = core_at()
    a = worker(core, "a", cores=4)
    core.tune(C, "max-library-retries", 2)
    core.install_library(C, lib(), b"")
    core.submit(C, [call(i) for i in range(1, 4)], [None] * 3)
    for n in range(2):
        out = cycle(core)
        assert [i for i in out if isinstance(i, SendInstall)], f"instance {n} started"
        core.library_status(a, "L", "ready", None)
        core.library_status(a, "L", "gone", "the library process died")
    out = list(core.take()[1])
    assert "L" not in core.libraries
    assert {r.outcome for r in results(out).values()} == {Outcome.LIBRARY_ERROR}
    core.submit(C, [call(9)], [None])
    r = results(list(core.take()[1]))[9]
    assert r.outcome == Outcome.LIBRARY_ERROR and "no library named" in (r.error or "")


def test_a_library_gets_its_inputs_staged_with_its_install_and_waits_for_a_temp_one() -> None:
    core = core_at()
    a = worker(core, "a", cores=4)
    temp, buf = CacheName("temp-ctx"), CacheName("buf-data")
    core.files_received([buf])
    inputs = [
        FileBinding(cache_name=buf, remote_name="data", kind=FileKind.BUFFER),
        FileBinding(cache_name=temp, remote_name="ctx", kind=FileKind.TEMP),
    ]
    core.submit(
        C, [task(1, outputs=[FileBinding(cache_name=temp, remote_name="o", kind=FileKind.TEMP)])], [None]
    )
    core.install_library(C, lib(inputs=inputs), b"")
    core.submit(C, [call(2)], [None])
    out = cycle(core)
    assert not [i for i in out if isinstance(i, SendInstall)]  # its temp input is not made yet
    finish(core, a, 1, [OutputFile(remote_name="o", cache_name=temp)])
    (install,) = [i for i in cycle(core) if isinstance(i, SendInstall)]
    assert [s.cache_name for s in install.stage] == [buf]  # the temp is on that worker already
    assert install.stage[0].sources[0].kind == "manager"
    core.library_status(a, "L", "ready", None)
    assert core.catalog.busy("manager") == 0  # its transfers are over once it reports


def test_a_library_input_that_never_reached_the_manager_fails_its_calls() -> None:
    core = core_at()
    worker(core, "a", cores=4)
    core.install_library(
        C,
        lib(inputs=[FileBinding(cache_name=CacheName("buf-gone"), remote_name="x", kind=FileKind.BUFFER)]),
        b"",
    )
    core.submit(C, [call(1)], [None])
    r = results(cycle(core))[1]
    assert r.outcome == Outcome.LIBRARY_ERROR and "never reached the manager" in (r.error or "")
