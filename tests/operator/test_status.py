"""What `kubectl get vw` and `kubectl describe vw` show: phase, conditions, counts and the
last scaling decision, computed from what the operator observed."""

from __future__ import annotations

from typing import Any

from kubevine.operator.autoscale import (
    LastScaling,
    ManagerStats,
    ScalingDecision,
    TaskCounts,
    WorkerLoad,
    WorkerPod,
)
from kubevine.operator.status import (
    Observed,
    compute_status,
    deployment_available,
    finished_at,
    job_outcome,
    last_scaling,
    merge_patch,
    rfc3339,
    seconds_until_deletion,
    statefulset_ready,
    worker_counts,
)

NOW = 1_767_323_045.0  # 2026-01-02T03:04:05Z


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def running_pods(*names: str) -> list[WorkerPod]:
    return [WorkerPod(name=n, phase="Running", created=NOW - 60) for n in names]


def manager_stats(*workers: WorkerLoad, done: int = 0, waiting: int = 0) -> ManagerStats:
    return ManagerStats(time=NOW, workers=list(workers), tasks=TaskCounts(done=done, waiting=waiting))


def decision(current: int, target: int, desired: int, reason: str = "r") -> ScalingDecision:
    return ScalingDecision(
        desired=desired,
        create=max(0, target - current),
        drain=[],
        delete=[],
        reason=reason,
        current=current,
        target=target,
    )


def test_an_invalid_spec_shows_phase_invalid_and_the_message() -> None:
    status = compute_status(
        Observed(
            generation=3,
            spec_error="workers.min must be less than or equal to workers.max",
        ),
        None,
        NOW,
    )
    assert status["phase"] == "Invalid"
    assert status["observedGeneration"] == 3
    valid = conditions(status)["Valid"]
    assert (valid["status"], valid["reason"]) == ("False", "InvalidSpec")
    assert "workers.min" in valid["message"]
    assert set(conditions(status)) == {"Valid"}


def test_a_workflow_waits_for_redis_then_for_the_manager() -> None:
    waiting_redis = compute_status(Observed(generation=1, state_store_ready=False), None, NOW)
    assert waiting_redis["phase"] == "Pending"
    ready = conditions(waiting_redis)["ManagerReady"]
    assert (ready["status"], ready["reason"]) == ("False", "StateStoreNotReady")
    waiting_manager = compute_status(Observed(generation=1), None, NOW)
    assert conditions(waiting_manager)["ManagerReady"]["reason"] == "ManagerNotAvailable"


def test_a_serving_workflow_is_running_with_its_counts() -> None:
    pods = [*running_pods("a", "b"), WorkerPod(name="c", phase="Pending", created=NOW)]
    st = manager_stats(
        WorkerLoad(id="1", pod="a", running_tasks=1),
        WorkerLoad(id="2", pod="b", running_tasks=0, idle_since=NOW),
        done=42,
        waiting=7,
    )
    status = compute_status(
        Observed(
            generation=2,
            manager_available=True,
            pods=pods,
            stats=st,
            decision=decision(3, 3, 3),
        ),
        None,
        NOW,
    )
    assert status["phase"] == "Running"
    assert status["workers"] == {
        "desired": 3,
        "pending": 1,
        "connected": 2,
        "draining": 0,
    }
    assert status["tasks"] == {"waiting": 7, "running": 0, "done": 42, "failed": 0}
    assert status["message"] == "2 worker(s) connected, 42 task(s) done"
    workers_ready = conditions(status)["WorkersReady"]
    assert (workers_ready["status"], workers_ready["reason"]) == (
        "False",
        "WaitingForWorkers",
    )
    assert workers_ready["message"] == "2 of 3 workers connected, 1 pending"
    assert conditions(status)["Scaling"]["reason"] == "ScalingUp"


def test_no_workers_needed_is_ready_and_stable() -> None:
    status = compute_status(
        Observed(
            generation=1,
            manager_available=True,
            stats=manager_stats(),
            decision=decision(0, 0, 0),
        ),
        None,
        NOW,
    )
    assert conditions(status)["WorkersReady"]["reason"] == "NoWorkersNeeded"
    assert conditions(status)["Scaling"]["status"] == "False"


def test_a_scaling_decision_is_recorded_with_its_reason() -> None:
    status = compute_status(
        Observed(
            generation=1,
            manager_available=True,
            decision=decision(0, 3, 3, reason="scale up 0→3: 300 waiting"),
        ),
        None,
        NOW,
    )
    assert status["lastScaling"] == {
        "time": "2026-01-02T03:04:05Z",
        "from": 0,
        "to": 3,
        "reason": "scale up 0→3: 300 waiting",
    }
    scaling = conditions(status)["Scaling"]
    assert (scaling["status"], scaling["reason"]) == ("True", "ScaledUp")
    # the record is what the autoscaler reads back as its last decision
    assert last_scaling(status) == LastScaling(
        time=NOW, from_count=0, to_count=3, reason="scale up 0→3: 300 waiting"
    )


def test_a_steady_step_keeps_the_previous_scaling_record_and_task_counts() -> None:
    previous = {
        "lastScaling": {
            "time": "2026-01-01T00:00:00Z",
            "from": 0,
            "to": 2,
            "reason": "x",
        },
        "tasks": {"waiting": 0, "running": 0, "done": 10, "failed": 1},
        "workers": {"desired": 2},
    }
    status = compute_status(Observed(generation=1, manager_available=True), previous, NOW)
    assert status["lastScaling"] == previous["lastScaling"]
    assert status["tasks"] == previous["tasks"]
    assert status["workers"]["desired"] == 2


def test_last_transition_time_changes_only_on_a_transition() -> None:
    first = compute_status(Observed(generation=1), None, NOW)
    assert conditions(first)["ManagerReady"]["lastTransitionTime"] == rfc3339(NOW)
    same = compute_status(Observed(generation=1), first, NOW + 30)
    assert conditions(same)["ManagerReady"]["lastTransitionTime"] == rfc3339(NOW)
    assert conditions(same)["Valid"]["lastTransitionTime"] == rfc3339(NOW)
    flipped = compute_status(Observed(generation=1, manager_available=True), same, NOW + 60)
    assert conditions(flipped)["ManagerReady"]["lastTransitionTime"] == rfc3339(NOW + 60)
    assert conditions(flipped)["Valid"]["lastTransitionTime"] == rfc3339(NOW)


def test_an_application_that_succeeds_ends_the_workflow_succeeded() -> None:
    running = compute_status(
        Observed(generation=1, has_application=True, manager_available=True, job="Running"),
        None,
        NOW,
    )
    assert running["phase"] == "Running"
    assert conditions(running)["Succeeded"]["status"] == "False"
    done = compute_status(
        Observed(generation=1, has_application=True, manager_available=True, job="Succeeded"),
        running,
        NOW + 100,
    )
    assert done["phase"] == "Succeeded"
    assert conditions(done)["Succeeded"]["status"] == "True"
    assert conditions(done)["Failed"]["status"] == "False"
    assert finished_at(done) == NOW + 100


def test_an_application_that_fails_ends_the_workflow_failed() -> None:
    status = compute_status(
        Observed(generation=1, has_application=True, manager_available=True, job="Failed"),
        None,
        NOW,
    )
    assert status["phase"] == "Failed"
    assert conditions(status)["Failed"]["status"] == "True"
    assert status["message"] == "the application Job failed"


def test_without_an_application_there_is_no_outcome_condition() -> None:
    status = compute_status(Observed(generation=1, manager_available=True), None, NOW)
    assert "Succeeded" not in conditions(status)
    assert "Failed" not in conditions(status)


def test_the_ttl_counts_from_the_end_of_the_application() -> None:
    done = compute_status(
        Observed(generation=1, has_application=True, manager_available=True, job="Succeeded"),
        None,
        NOW,
    )
    assert seconds_until_deletion(done, 300, NOW + 100) == 200
    assert seconds_until_deletion(done, 300, NOW + 400) == 0
    assert seconds_until_deletion(done, None, NOW) is None
    running = compute_status(Observed(generation=1, manager_available=True), None, NOW)
    assert seconds_until_deletion(running, 300, NOW) is None


def test_draining_and_terminating_workers_are_counted() -> None:
    pods = [
        *running_pods("a", "b"),
        WorkerPod(name="c", phase="Running", created=NOW, deleting=True),
    ]
    st = manager_stats(
        WorkerLoad(id="1", pod="a", running_tasks=0, draining=True),
        WorkerLoad(id="2", pod="b", running_tasks=1),
    )
    counts = worker_counts(pods, st, desired=1)
    assert counts == {"desired": 1, "pending": 0, "connected": 2, "draining": 2}


def test_child_readiness_is_read_from_their_status() -> None:
    assert not deployment_available(None)
    assert not deployment_available({"status": {}})
    assert deployment_available({"status": {"availableReplicas": 1}})
    assert deployment_available({"status": {"conditions": [{"type": "Available", "status": "True"}]}})
    assert not statefulset_ready({"status": {"replicas": 1}})
    assert statefulset_ready({"status": {"readyReplicas": 1}})


def test_the_application_outcome_is_read_from_the_job() -> None:
    assert job_outcome(None) is None
    assert job_outcome({"status": {"active": 1}}) == "Running"
    assert job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == ("Succeeded")
    assert job_outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == ("Failed")
    assert job_outcome({"status": {"succeeded": 1}}) == "Succeeded"
    assert job_outcome({"spec": {"backoffLimit": 0}, "status": {"failed": 1}}) == "Failed"


def test_a_workflow_turned_invalid_loses_its_stale_status_fields_but_not_kopfs() -> None:
    running = compute_status(
        Observed(generation=1, manager_available=True, decision=decision(0, 2, 2)), None, NOW
    )
    previous = {**running, "kopf": {"progress": {}}}
    invalid = compute_status(Observed(generation=2, spec_error="workers.cores: bad"), previous, NOW)
    patch = merge_patch(invalid, previous)
    assert patch["lastScaling"] is None
    assert patch["phase"] == "Invalid"
    assert "kopf" not in patch
