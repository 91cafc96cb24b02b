"""The autoscaler's decisions: scale up at once within max, scale down only idle workers
that lose nothing, never flap — the behaviour a platform engineer watches in
`kubectl get vw -w` and in the Events."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubevine.operator.autoscale import (
    Backoff,
    Demand,
    LastScaling,
    ManagerStats,
    ScalingDecision,
    ScalingPolicy,
    TaskLoad,
    TaskSize,
    WorkerLoad,
    WorkerPod,
    decide,
    pool_limits,
    workers_needed,
)
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import WorkersSpec, parse_spec

NOW = 1_000_000.0
POLICY = ScalingPolicy(
    max_create_per_step=10,
    max_drain_per_step=10,
    stabilization_seconds=60,
    stats_max_age_seconds=30,
)


def pool(**overrides: Any) -> WorkersSpec:
    values: dict[str, Any] = {"min": 0, "max": 3, "cores": 4, "memory": 8192, "disk": 0}
    values.update(overrides)
    return WorkersSpec(**values)


def demand(waiting: int = 0, running: int = 0, cores: float = 1.0, memory: int = 100) -> Demand:
    return Demand(
        waiting=TaskLoad(tasks=waiting, cores=waiting * cores, memory=waiting * memory),
        running=TaskLoad(tasks=running, cores=running * cores, memory=running * memory),
        largest_waiting=TaskSize(cores=cores if waiting else 0, memory=memory if waiting else 0),
    )


def pod(name: str, phase: str = "Running", age: float = 300.0, deleting: bool = False) -> WorkerPod:
    return WorkerPod.model_validate(
        {"name": name, "phase": phase, "created": NOW - age, "deleting": deleting}
    )


def busy(name: str, tasks: int = 1, **extra: Any) -> WorkerLoad:
    return WorkerLoad(id=f"w-{name}", pod=name, running_tasks=tasks, **extra)


def idle(name: str, for_seconds: float, **extra: Any) -> WorkerLoad:
    return WorkerLoad(id=f"w-{name}", pod=name, running_tasks=0, idle_since=NOW - for_seconds, **extra)


def stats(d: Demand, *workers: WorkerLoad, age: float = 1.0) -> ManagerStats:
    return ManagerStats(time=NOW - age, demand=d, workers=list(workers))


def run(
    spec: WorkersSpec,
    st: ManagerStats | None,
    pods: list[WorkerPod],
    last: LastScaling | None = None,
    now: float = NOW,
) -> ScalingDecision:
    return decide(spec, st, pods, now, last, POLICY)


# --- how many ----------------------------------------------------------------------------


def test_no_tasks_and_min_zero_means_no_workers() -> None:
    decision = run(pool(), stats(demand()), [])
    assert (decision.desired, decision.create, decision.drain, decision.delete) == (
        0,
        0,
        [],
        [],
    )
    assert not decision.scaled


def test_demand_is_divided_by_worker_capacity_and_rounded_up() -> None:
    decision = run(pool(max=10), stats(demand(waiting=9)), [])  # 9 cores / 4 per worker
    assert decision.desired == 3
    assert decision.create == 3
    assert "9 cores / 4 per worker" in decision.reason


def test_running_tasks_count_as_demand_too() -> None:
    decision = run(pool(max=10), stats(demand(waiting=4, running=4)), [])
    assert decision.desired == 2


def test_the_scarcest_resource_decides() -> None:
    memory_bound = demand(waiting=4, cores=1, memory=6000)  # 24000 MB / 8192 → 3
    decision = run(pool(max=10), stats(memory_bound), [])
    assert decision.desired == 3
    assert "MB memory" in decision.reason


def test_gpu_demand_needs_gpu_workers() -> None:
    d = Demand(waiting=TaskLoad(tasks=3, cores=3, memory=300, gpus=3))
    assert workers_needed(pool(gpus=1), d)[0] == 3
    assert workers_needed(pool(gpus=2), d)[0] == 2


def test_any_task_needs_at_least_one_worker() -> None:
    tiny = Demand(waiting=TaskLoad(tasks=1))
    assert workers_needed(pool(), tiny)[0] == 1


def test_the_count_is_capped_at_max_and_the_reason_says_so() -> None:
    decision = run(pool(max=3), stats(demand(waiting=300)), [])
    assert decision.desired == 3
    assert decision.create == 3
    assert "capped at max 3" in decision.reason


def test_min_is_kept_even_without_work() -> None:
    decision = run(pool(min=2), stats(demand()), [])
    assert (decision.desired, decision.create) == (2, 2)
    assert "raised to min 2" in decision.reason


def test_a_task_too_big_for_any_worker_is_reported() -> None:
    d = Demand(
        waiting=TaskLoad(tasks=1, cores=8, memory=100),
        largest_waiting=TaskSize(cores=8, memory=100),
    )
    decision = run(pool(max=5), stats(d), [])
    assert "cannot fit any worker (8 cores > 4)" in decision.reason


# --- scaling up --------------------------------------------------------------------------


def test_scale_up_happens_at_once_and_says_why() -> None:
    decision = run(pool(max=3), stats(demand(waiting=300)), [pod("a")], last=None)
    assert decision.create == 2
    assert decision.reason.startswith("scale up 1→3:")
    assert decision.event_reason == "ScaledUp"
    record = decision.record(NOW)
    assert record is not None
    assert (record.from_count, record.to_count) == (1, 3)


def test_scale_up_is_not_delayed_by_a_recent_scale_down() -> None:
    last = LastScaling(time=NOW - 1, from_count=3, to_count=1, reason="")
    decision = run(pool(), stats(demand(waiting=300)), [pod("a")], last=last)
    assert decision.create == 2


def test_pending_pods_count_as_capacity() -> None:
    pods = [pod("a", "Pending", age=2), pod("b", "Pending", age=2)]
    decision = run(pool(max=10), stats(demand(waiting=8)), pods)  # needs 2
    assert decision.create == 0
    assert decision.current == 2


def test_scale_up_is_bounded_per_step() -> None:
    policy = POLICY.model_copy(update={"max_create_per_step": 4})
    decision = decide(pool(max=100), stats(demand(waiting=400)), [], NOW, None, policy)
    assert decision.desired == 100
    assert decision.create == 4
    assert "at most 4 per step" in decision.reason


def test_draining_pods_still_count_against_max() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    st = stats(demand(waiting=300), busy("a"), busy("b"), busy("c", draining=True))
    decision = run(pool(max=3), st, pods)
    assert decision.current == 2  # c is leaving
    assert decision.create == 0  # but a fourth pod would exceed max
    assert "before exceeding max" in decision.reason


def test_terminating_pods_count_against_max() -> None:
    pods = [pod("a"), pod("b"), pod("c", deleting=True)]
    decision = run(pool(max=3), stats(demand(waiting=300), busy("a"), busy("b")), pods)
    assert decision.create == 0


def test_without_stats_only_min_is_guaranteed() -> None:
    decision = run(pool(min=2, max=5), None, [pod("a")])
    assert decision.create == 1
    assert "manager stats unavailable (none published)" in decision.reason


# --- scaling down ------------------------------------------------------------------------


def test_an_idle_worker_is_drained_after_its_idle_timeout() -> None:
    decision = run(pool(idle_timeout_seconds=60), stats(demand(), idle("a", 61)), [pod("a")])
    assert decision.drain == ["w-a"]
    assert decision.target == 0
    assert decision.event_reason == "ScaledDown"
    assert decision.reason.startswith("scale down 1→0")


def test_a_worker_idle_less_than_its_timeout_stays() -> None:
    decision = run(pool(idle_timeout_seconds=60), stats(demand(), idle("a", 59)), [pod("a")])
    assert decision.drain == []
    assert "no worker is removable yet" in decision.reason


def test_min_zero_is_reached_after_the_idle_timeout() -> None:
    names = ["a", "b", "c"]
    pods = [pod(n) for n in names]
    early = run(pool(), stats(demand(), *(idle(n, 30) for n in names)), pods)
    late = run(pool(), stats(demand(), *(idle(n, 90) for n in names)), pods)
    assert early.drain == []
    assert sorted(late.drain) == ["w-a", "w-b", "w-c"]
    assert late.target == 0


def test_a_busy_worker_is_never_drained() -> None:
    pods = [pod("a"), pod("b")]
    decision = run(pool(), stats(demand(running=1), busy("a"), idle("b", 600)), pods)
    assert decision.drain == ["w-b"]


def test_the_holder_of_a_unique_temp_file_is_never_drained() -> None:
    holder = idle("a", 600, holds_unique_temps=True)
    decision = run(pool(), stats(demand(), holder), [pod("a")])
    assert decision.drain == []
    assert decision.delete == []


def test_the_pool_never_drops_below_min() -> None:
    names = ["a", "b", "c"]
    decision = run(
        pool(min=2),
        stats(demand(), *(idle(n, 600) for n in names)),
        [pod(n) for n in names],
    )
    assert len(decision.drain) == 1
    assert decision.target == 2


def test_the_longest_idle_worker_goes_first() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    st = stats(demand(running=4), busy("a", 4), idle("b", 100), idle("c", 500))
    decision = run(pool(), st, pods)
    assert decision.desired == 1
    assert decision.drain == ["w-c", "w-b"]


def test_draining_is_bounded_per_step() -> None:
    policy = POLICY.model_copy(update={"max_drain_per_step": 2})
    names = [f"p{i}" for i in range(6)]
    st = stats(demand(), *(idle(n, 600) for n in names))
    decision = decide(pool(max=10), st, [pod(n) for n in names], NOW, None, policy)
    assert len(decision.drain) == 2


def test_no_scale_down_within_the_stabilisation_window_after_a_scale_up() -> None:
    last = LastScaling(time=NOW - 10, from_count=0, to_count=1, reason="up")
    held = run(
        pool(idle_timeout_seconds=0),
        stats(demand(), idle("a", 5)),
        [pod("a")],
        last=last,
    )
    assert held.drain == []
    assert "stabilisation window" in held.reason
    later = LastScaling(time=NOW - 61, from_count=0, to_count=1, reason="up")
    released = run(pool(idle_timeout_seconds=0), stats(demand(), idle("a", 5)), [pod("a")], later)
    assert released.drain == ["w-a"]


def test_stale_stats_never_drain_anyone() -> None:
    st = stats(demand(), idle("a", 6000), age=31)
    decision = run(pool(), st, [pod("a")])
    assert decision.drain == []
    assert "31s old" in decision.reason


def test_a_drained_worker_pod_is_deleted() -> None:
    st = stats(demand(), idle("a", 600, draining=True))
    decision = run(pool(), st, [pod("a")])
    assert decision.delete == ["a"]
    assert decision.drain == []


def test_a_draining_worker_that_still_runs_a_task_keeps_its_pod() -> None:
    decision = run(pool(), stats(demand(running=1), busy("a", draining=True)), [pod("a")])
    assert decision.delete == []


def test_drained_worker_pods_are_cleaned_up_and_failed_ones_kept_as_evidence() -> None:
    pods = [
        pod("a", "Succeeded"),
        pod("b", "Failed"),
        pod("c", "Failed", deleting=True),
    ]
    decision = run(pool(), stats(demand()), pods)
    assert sorted(decision.delete) == ["a"]  # b stays for kubectl describe / logs
    assert not decision.scaled


def test_failed_pods_are_kept_for_a_while_and_only_the_newest() -> None:
    policy = POLICY.model_copy(update={"failed_pods_kept": 2, "failed_pod_retention_seconds": 600})
    pods = [
        WorkerPod(
            name=f"f{i}",
            phase="Failed",
            created=NOW - 1000,
            finished_at=NOW - 100 * i,
            failure="Error (exit code 1)",
        )
        for i in range(1, 8)
    ]
    decision = decide(pool(), stats(demand()), pods, NOW, None, policy)
    assert sorted(decision.delete) == [f"f{i}" for i in range(3, 8)]  # the two newest stay
    old = [WorkerPod(name="old", phase="Failed", created=NOW - 2000, finished_at=NOW - 700)]
    assert decide(pool(), stats(demand()), old, NOW, None, policy).delete == ["old"]


def test_failed_pods_hold_new_ones_back_longer_each_time() -> None:
    waits = []
    for failures in range(1, 5):
        pods = [
            WorkerPod(
                name=f"f{i}",
                phase="Failed",
                created=NOW - 60,
                finished_at=NOW - 1,
                failure="OOMKilled (exit code 137)",
            )
            for i in range(failures)
        ]
        held = decide(pool(), stats(demand(waiting=4)), pods, NOW, None, POLICY)
        assert held.create == 0 and held.cause == "backoff"
        assert "OOMKilled" in held.reason
        waits.append(
            next(
                t
                for t in range(1, 3000)
                if decide(pool(), stats(demand(waiting=4), age=1 - t), pods, NOW + t, None, POLICY).create
            )
        )
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0]


def test_a_refused_creation_holds_new_pods_until_its_backoff_is_over() -> None:
    wait = Backoff(NOW + 30, "the API server refused the last worker pod (403)")
    held = decide(pool(), stats(demand(waiting=2)), [], NOW, None, POLICY, wait)
    assert (held.create, held.cause) == (0, "backoff")
    assert "403" in held.reason
    assert decide(pool(), stats(demand(waiting=2), age=-30), [], NOW + 31, None, POLICY, wait).create == 1


def test_a_pod_whose_worker_never_connected_goes_before_a_connected_one() -> None:
    pods = [pod("a"), pod("b", "Pending", age=120)]
    decision = run(pool(), stats(demand(), idle("a", 120)), pods)
    # both removable; the unconnected pod is deleted outright, the idle worker drained
    assert decision.delete == ["b"]
    assert decision.drain == ["w-a"]


def test_a_running_pod_is_not_taken_for_empty_when_some_worker_hides_its_pod() -> None:
    anonymous = WorkerLoad(id="w-x", pod=None, running_tasks=2)
    decision = run(pool(), stats(demand(running=2), anonymous), [pod("a")])
    assert decision.delete == []


def test_lowering_max_drains_idle_workers_at_once_but_never_busy_ones() -> None:
    names = ["a", "b", "c", "d"]
    st = stats(demand(running=8), busy("a", 4), busy("b", 4), idle("c", 1), idle("d", 1))
    decision = run(pool(max=2, idle_timeout_seconds=600), st, [pod(n) for n in names])
    assert sorted(decision.drain) == ["w-c", "w-d"]


def test_a_finished_application_scales_the_pool_to_zero_but_spares_busy_workers() -> None:
    spec = parse_spec({"stateStore": {"managed": True}, "workers": {"min": 2, "max": 5}})
    assert (pool_limits(spec, finished=False).min, pool_limits(spec, finished=False).max) == (2, 5)
    finished = pool_limits(spec, finished=True)
    assert (finished.min, finished.max, finished.cores) == (0, 0, spec.workers.cores)
    st = stats(demand(running=4), busy("a", 4), idle("b", 1))
    decision = run(finished, st, [pod("a"), pod("b")])
    assert decision.desired == 0
    assert decision.drain == ["w-b"]


# --- pods from the API -------------------------------------------------------------------


def test_a_worker_pod_is_read_from_its_kubernetes_object() -> None:
    obj = {
        "metadata": {
            "name": "met-worker-a1",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "deletionTimestamp": "2026-01-02T03:05:00Z",
        },
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running"},
    }
    p = WorkerPod.from_k8s(obj)
    assert (p.name, p.phase, p.deleting, p.node) == (
        "met-worker-a1",
        "Running",
        True,
        "node-1",
    )
    assert p.created == 1767323045.0
    assert WorkerPod.from_k8s({"metadata": {"name": "x"}}).phase == "Pending"


def test_the_policy_follows_the_operator_settings() -> None:
    settings = OperatorSettings(stabilization_seconds=5, max_create_per_step=2)
    policy = ScalingPolicy.from_settings(settings)
    assert (policy.stabilization_seconds, policy.max_create_per_step) == (5, 2)


def test_a_scaling_record_survives_the_status_round_trip() -> None:
    record = LastScaling(time=1767323045.0, from_count=0, to_count=3, reason="burst")
    assert record.to_status() == {
        "time": "2026-01-02T03:04:05Z",
        "from": 0,
        "to": 3,
        "reason": "burst",
    }
    assert LastScaling.from_status(record.to_status()) == record
    assert LastScaling.from_status(None) is None
    assert LastScaling.from_status({"time": "yesterday"}) is None


# --- invariants over many random situations ----------------------------------------------


def random_situation(
    rng: random.Random,
) -> tuple[WorkersSpec, ManagerStats | None, list[WorkerPod]]:
    spec_max = rng.randint(0, 6)
    spec = pool(
        min=rng.randint(0, spec_max),
        max=spec_max,
        idle_timeout_seconds=rng.choice([0, 30, 60]),
    )
    pods: list[WorkerPod] = []
    workers: list[WorkerLoad] = []
    for i in range(rng.randint(0, spec_max + 1)):
        name = f"p{i}"
        phase = rng.choice(["Pending", "Running", "Running", "Running", "Succeeded", "Failed"])
        pods.append(pod(name, phase, age=rng.uniform(0, 300), deleting=rng.random() < 0.1))
        if phase == "Running" and rng.random() < 0.9:
            running = rng.choice([0, 0, 1, 3])
            workers.append(
                WorkerLoad(
                    id=f"w{i}",
                    pod=name,
                    running_tasks=running,
                    idle_since=None if running else NOW - rng.uniform(0, 200),
                    draining=rng.random() < 0.2,
                    holds_unique_temps=rng.random() < 0.3,
                )
            )
    d = demand(waiting=rng.randint(0, 40), running=sum(w.running_tasks for w in workers))
    st = None if rng.random() < 0.1 else stats(d, *workers, age=rng.choice([1, 1, 1, 45]))
    return spec, st, pods


@pytest.mark.parametrize("seed", range(400))
def test_invariants_hold_in_random_situations(seed: int) -> None:
    rng = random.Random(seed)
    spec, st, pods = random_situation(rng)
    last = rng.choice(
        [
            None,
            LastScaling(time=NOW - rng.uniform(0, 120), from_count=0, to_count=2, reason=""),
        ]
    )
    decision = decide(spec, st, pods, NOW, last, POLICY)
    existing = [p for p in pods if p.phase not in ("Succeeded", "Failed")]
    workers = {w.id: w for w in (st.workers if st else [])}
    by_pod = {w.pod: w for w in workers.values()}

    # never more pods than max
    if len(existing) <= spec.max:
        assert len(existing) + decision.create <= spec.max
    # never below min by our own hand
    if decision.target < decision.current:
        assert decision.target >= spec.min
    # only idle, non-draining workers that hold no unique temp are drained
    for worker_id in decision.drain:
        worker = workers[worker_id]
        assert worker.running_tasks == 0
        assert not worker.holds_unique_temps
        assert not worker.draining
    # a deleted pod is finished, drained, or never connected — never a busy worker's
    for name in decision.delete:
        owner = by_pod.get(name)
        assert owner is None or owner.running_tasks == 0
    # stale or missing stats never remove anyone
    if st is None or NOW - st.time > POLICY.stats_max_age_seconds:
        assert decision.drain == []
    # nothing is both created for and removed in one step
    assert not (decision.create and (decision.drain or decision.target < decision.current))


# --- no flapping over time ---------------------------------------------------------------


def simulate(
    bursts: dict[int, int], ticks: int, spec: WorkersSpec
) -> tuple[list[tuple[float, int, int]], int]:
    """Tick every 5 s: pods connect one tick after creation, each worker runs up to
    `cores` tasks per tick; returns the scaling records and the most pods at once."""
    t0 = NOW
    pods: dict[str, float] = {}
    idle_since: dict[str, float | None] = {}
    draining: set[str] = set()
    waiting = 0
    last: LastScaling | None = None
    history: list[tuple[float, int, int]] = []
    counter = 0
    peak = 0
    for tick in range(ticks):
        now = t0 + 5 * tick
        waiting += bursts.get(tick, 0)
        connected = [n for n, created in pods.items() if now - created >= 5]
        running: dict[str, int] = {}
        for name in connected:
            take = 0 if name in draining else min(spec.cores, waiting)
            waiting -= take
            running[name] = take
            if take:
                idle_since[name] = None
            elif idle_since.get(name) is None:
                idle_since[name] = now
        st = ManagerStats(
            time=now,
            demand=demand(waiting=waiting, running=sum(running.values())),
            workers=[
                WorkerLoad(
                    id=n,
                    pod=n,
                    running_tasks=running[n],
                    idle_since=idle_since.get(n),
                    draining=n in draining,
                )
                for n in connected
            ],
        )
        view = [
            WorkerPod(name=n, phase="Running" if n in connected else "Pending", created=c)
            for n, c in pods.items()
        ]
        decision = decide(spec, st, view, now, last, POLICY)
        for name in decision.delete:
            pods.pop(name, None)
            draining.discard(name)
        draining.update(decision.drain)
        for _ in range(decision.create):
            counter += 1
            pods[f"p{counter}"] = now
        peak = max(peak, len(pods))
        record = decision.record(now)
        if record is not None:
            last = record
            history.append((now, record.from_count, record.to_count))
    assert waiting == 0, "the simulated work must finish"
    return history, peak


def test_bursty_demand_never_reverses_within_the_stabilisation_window() -> None:
    spec = pool(min=0, max=4, cores=2, idle_timeout_seconds=20)
    bursts = {0: 40, 9: 6, 14: 30, 30: 2, 31: 2, 33: 50}
    history, _ = simulate(bursts, ticks=120, spec=spec)
    ups = [t for t, a, b in history if b > a]
    downs = [t for t, a, b in history if b < a]
    assert ups and downs  # it did scale both ways
    for down in downs:
        assert all(down - up >= POLICY.stabilization_seconds for up in ups if up <= down)
    assert history[-1][2] == 0  # and returned to min


def test_the_pool_never_exceeds_max_under_a_storm_of_work() -> None:
    spec = pool(min=0, max=3, cores=1, idle_timeout_seconds=10)
    history, peak = simulate({0: 300, 3: 300}, ticks=250, spec=spec)
    assert peak == 3
    assert max(to for _, _, to in history) == 3
    assert history[-1][2] == 0


# --- the one-word cause and action (the operator's metrics label them) -------------------


@pytest.mark.parametrize(
    ("spec", "st", "pods", "last", "action", "cause"),
    [
        (pool(max=10), stats(demand(waiting=9)), [], None, "scale_up", "demand"),
        (pool(max=3), stats(demand(waiting=300)), [], None, "scale_up", "max"),
        (pool(min=2), stats(demand()), [], None, "scale_up", "min"),
        (pool(), stats(demand()), [], None, "steady", "no_tasks"),
        (pool(min=1), None, [], None, "scale_up", "no_stats"),
        (pool(max=3), stats(demand(waiting=300), *(busy(n) for n in "abc")), [pod(n) for n in "abc"], None,
         "steady", "max"),
        (pool(idle_timeout_seconds=0), stats(demand(), idle("a", 5)), [pod("a")],
         LastScaling(time=NOW - 5, from_count=0, to_count=1), "hold", "stabilization"),
        (pool(idle_timeout_seconds=600), stats(demand(), idle("a", 5)), [pod("a")], None, "hold",
         "not_removable"),
        (pool(idle_timeout_seconds=0), stats(demand(), idle("a", 5)), [pod("a")], None, "scale_down",
         "no_tasks"),
        (pool(max=1), stats(demand(waiting=8), busy("a"), idle("b", 1)), [pod("a"), pod("b")],
         LastScaling(time=NOW - 5, from_count=0, to_count=2), "scale_down", "over_max"),
    ],
)  # fmt: skip
def test_every_decision_names_its_action_and_cause_in_one_word(
    spec: WorkersSpec,
    st: ManagerStats | None,
    pods: list[WorkerPod],
    last: LastScaling | None,
    action: str,
    cause: str,
) -> None:
    decision = run(spec, st, pods, last)
    assert (decision.action, decision.cause) == (action, cause), decision.reason


def test_a_pod_lost_with_its_node_does_not_hold_a_place_under_max() -> None:
    lost = WorkerPod.from_k8s(
        {
            "metadata": {
                "name": "gone",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "x",
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
                ],
            },
        }
    )
    assert lost.lost and lost.deleting
    pods = [pod("a"), pod("b"), lost]
    decision = run(pool(max=3), stats(demand(waiting=10), busy("a"), busy("b")), pods)
    assert decision.create == 1  # the replacement is made now, not when the node comes back
    draining = pod("c", deleting=True)  # an ordinary pod on its way out still counts
    assert (
        run(
            pool(max=3), stats(demand(waiting=10), busy("a"), busy("b")), [pod("a"), pod("b"), draining]
        ).create
        == 0
    )
