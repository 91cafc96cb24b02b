"""The operator's glue between kopf, the cluster and the manager, tested without any of them:
the stats adapter, the command line, the spec-update comparison, the Events of a step.

(The end-to-end tests next to this file run the same code for real; these pin down the
cases an end-to-end run rarely hits: a newer manager's extra fields, a queued task on an
otherwise idle worker, option precedence.)
"""

from __future__ import annotations

import dataclasses
import json
import string
from typing import Any

import pytest
from pydantic import ValidationError

from kubevine.operator import children, run, scaler
from kubevine.operator.adapter import manager_stats
from kubevine.operator.autoscale import ScalingDecision, WorkerPod
from kubevine.operator.naming import WorkflowRef
from kubevine.operator.problems import Problem
from kubevine.operator.settings import OperatorSettings
from kubevine.stats import ManagerStatus

NOW = 1_767_323_045.0


def status_json(**extra: Any) -> dict[str, Any]:
    worker = {
        "id": "wf-worker-abcde",
        "node": "node-a",
        "host": "h",
        "state": "connected",
        "resources": {"cores": 1, "memory": 256, "disk": 0, "gpus": 0},
        "committed": {"cores": 0, "memory": 0, "disk": 0, "gpus": 0},
        "running": 0,
        "queued": 0,
        "idle_since": NOW - 30,
        "pod": "wf-worker-abcde",
    }
    return {
        "workflow": "wf",
        "manager_id": "m",
        "address": "127.0.0.2:9123",
        "durable": True,
        "time": NOW,
        "started": NOW - 100,
        "tasks": {"ready": 5},
        "totals": {"submitted": 12, "done": 6, "failed": 1},
        "waiting": {"tasks": 5, "cores": 5.0, "memory": 500, "disk": 0, "gpus": 0},
        "running": {"tasks": 0},
        "largest_waiting": {"cores": 2, "memory": 300, "disk": 0, "gpus": 0},
        "workers": [worker],
        **extra,
    }


def test_manager_status_becomes_the_autoscalers_demand_workers_and_counts() -> None:
    stats = manager_stats(ManagerStatus.model_validate(status_json()))
    assert stats.time == NOW
    assert stats.demand.waiting.tasks == 5 and stats.demand.waiting.cores == 5.0
    assert stats.demand.largest_waiting.cores == 2 and stats.demand.largest_waiting.memory == 300
    assert stats.tasks.model_dump() == {"waiting": 5, "running": 0, "done": 6, "failed": 1}
    (worker,) = stats.workers
    assert worker.pod == "wf-worker-abcde" and worker.running_tasks == 0 and worker.idle_since == NOW - 30


def test_a_worker_holding_a_queued_task_is_busy_not_idle() -> None:
    raw = status_json()
    raw["workers"][0].update(queued=1, idle_since=NOW - 30)
    (worker,) = manager_stats(ManagerStatus.model_validate(raw)).workers
    assert worker.running_tasks == 1 and worker.idle_since is None  # draining it would requeue the task


def test_a_newer_managers_unknown_fields_are_dropped_at_every_level() -> None:
    raw = status_json(flavour="new", perf={"completed": 3, "novelty": {"x": 1}})
    raw["workers"][0]["gpu_model"] = "H100"
    raw["libraries"] = [{"name": "lib", "mode": "direct", "slots": 2, "shiny": True}]
    status = ManagerStatus.model_validate_json(json.dumps(raw))  # what Admin.status() does
    assert status.perf.completed == 3 and status.workers[0].pod == "wf-worker-abcde"
    assert "flavour" not in status.model_dump() and "gpu_model" not in status.workers[0].model_dump()
    assert manager_stats(status).workers[0].pod == "wf-worker-abcde"


def test_a_status_the_scaling_rules_cannot_take_is_refused_where_it_is_read() -> None:
    raw = status_json()
    raw["waiting"]["tasks"] = -1
    with pytest.raises(ValidationError):
        manager_stats(ManagerStatus.model_validate(raw))


def test_operator_options_namespaces_peering_and_log_format() -> None:
    parser = run.build_parser()
    args = parser.parse_args(["-n", "a", "--namespace", "b", "--peering", "p", "--liveness", ""])
    assert args.namespaces == ["a", "b"] and args.peering == "p" and args.liveness == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["--namespace", "a", "--all-namespaces"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--peering", "p", "--standalone"])
    settings = OperatorSettings()  # log_format defaults to json for the chart
    assert run.log_format(None, {}, settings) == "text"
    assert run.log_format(None, {"KUBEVINE_OPERATOR_LOG_FORMAT": "json"}, settings) == "json"
    assert run.log_format(None, {"KUBEVINE_LOG_FORMAT": "json"}, settings) == "json"
    assert run.log_format("text", {"KUBEVINE_LOG_FORMAT": "json"}, settings) == "text"


def test_operator_refuses_to_start_without_a_namespace_or_with_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert run.main(["--standalone"]) == 2
    assert "--namespace" in capsys.readouterr().err
    monkeypatch.setenv("KUBEVINE_OPERATOR_SCALE_INTERVAL_SECONDS", "soon")
    assert run.main(["-n", "default"]) == 2
    assert "KUBEVINE_OPERATOR_SCALE_INTERVAL_SECONDS" in capsys.readouterr().err


def test_kopf_settings_scan_only_cluster_wide_and_name_the_finalizer() -> None:
    assert run.kopf_settings(clusterwide=False).scanning.disabled is True
    assert run.kopf_settings(clusterwide=True).scanning.disabled is False
    assert run.kopf_settings(clusterwide=False).persistence.finalizer == "kubevine.io/operator"


def test_a_child_is_patched_only_when_the_operators_manifest_changed() -> None:
    manifest: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"name": "m", "labels": {"a": "b"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "m", "image": "a"}]}}},
    }
    stamped = children.stamped(json.loads(json.dumps(manifest)))
    applied = stamped["metadata"]["annotations"]["kubevine.io/applied"]
    # What the API server adds (defaults, normalised quantities) is not in the hash: only the manifest.
    assert children.applied_hash(stamped) == applied == children.applied_hash(manifest)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "b"
    assert children.applied_hash(manifest) != applied


def test_a_statefulsets_immutable_fields_are_never_patched() -> None:
    manifest = {
        "kind": "StatefulSet",
        "metadata": {"name": "r", "labels": {}, "annotations": {}},
        "spec": {
            "replicas": 1,
            "serviceName": "r",
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
        },
    }
    patch = children._patch_of(manifest)
    assert set(patch["spec"]) == {"replicas", "template", "persistentVolumeClaimRetentionPolicy"}


def decision(current: int, target: int, reason: str = "why") -> ScalingDecision:
    return ScalingDecision(
        desired=target,
        create=max(0, target - current),
        drain=[],
        delete=[],
        reason=reason,
        current=current,
        target=target,
    )


def test_a_step_posts_an_event_per_scaling_decision_and_per_transition() -> None:
    ready = {"type": "ManagerReady", "status": "True", "reason": "ManagerAvailable", "message": "serving"}
    before = {"phase": "Running", "conditions": [ready]}
    steady = scaler._events(before, {"phase": "Running", "conditions": [ready]}, decision(2, 2), [])
    assert steady == []
    up = scaler._events(
        before, {"phase": "Running", "conditions": [ready]}, decision(0, 3, "scale up 0→3: x"), []
    )
    assert [(n.type, n.reason, n.message) for n in up] == [("Normal", "ScaledUp", "scale up 0→3: x")]
    first = scaler._events({}, {"phase": "Running", "conditions": [ready]}, decision(0, 0), [])
    assert [n.reason for n in first] == ["ManagerAvailable"]
    lost = {**ready, "status": "False", "reason": "ManagerNotAvailable", "message": "waiting"}
    down = scaler._events(before, {"phase": "Pending", "conditions": [lost]}, decision(0, 0), [])
    assert [(n.type, n.reason) for n in down] == [("Warning", "ManagerNotAvailable")]
    failed = scaler._events(
        before, {"phase": "Failed", "message": "the application Job failed"}, decision(1, 0), []
    )
    assert [(n.type, n.reason) for n in failed] == [
        ("Normal", "ScaledDown"),
        ("Warning", "ApplicationFailed"),
    ]


def test_a_problem_is_posted_once_when_it_appears_and_its_end_once() -> None:
    problem = Problem("worker", "ImagePullBackOff", "Back-off pulling image x", "wf-worker-a")
    quiet = {"phase": "Running", "conditions": []}
    troubled = {"phase": "Running", "conditions": [], "problems": [problem.to_status()]}
    first = scaler._events(quiet, troubled, None, [problem])
    assert [(n.type, n.reason) for n in first] == [("Warning", "ImagePullBackOff")]
    assert "wf-worker-a" in first[0].message
    assert scaler._events(troubled, troubled, None, [problem]) == []  # already said
    healthy = {"type": "Healthy", "status": "True"}
    sick = {"type": "Healthy", "status": "False"}
    over = scaler._events({**troubled, "conditions": [sick]}, {"conditions": [healthy]}, None, [])
    assert [(n.type, n.reason) for n in over] == [("Normal", "Recovered")]


def test_the_status_of_a_step_already_counts_the_pods_it_created_and_deleted() -> None:
    pods = [
        WorkerPod(name="a", phase="Running", created=NOW - 10),
        WorkerPod(name="b", phase="Succeeded", created=0),
    ]
    after = scaler._after(pods, created=["c"], deleted=["b"], now=NOW)
    assert [(p.name, p.phase, p.deleting) for p in after] == [
        ("a", "Running", False),
        ("b", "Succeeded", True),
        ("c", "Pending", False),
    ]


def test_worker_pod_suffixes_are_valid_pod_name_parts() -> None:
    suffixes = {scaler.worker_suffix() for _ in range(200)}
    assert len(suffixes) > 190
    assert all(len(s) == 5 and set(s) <= set(string.ascii_lowercase + string.digits) for s in suffixes)


def test_a_pod_this_operator_drained_counts_as_leaving_until_it_exits() -> None:
    context = scaler.Context(settings=OperatorSettings(), kube=None, policy=None)  # type: ignore[arg-type]
    context.of("wf").retiring = {"uid-a": NOW + 60, "uid-old": NOW - 1, "uid-gone": NOW + 60}
    context.of("other").retiring = {"x": NOW}
    ref = WorkflowRef(name="wf", namespace="default", uid="wf")
    seen = scaler.Observation(
        pods=[
            WorkerPod(name="a", phase="Running", created=NOW - 50),
            WorkerPod(name="b", phase="Running", created=NOW - 50),
            WorkerPod(name="old", phase="Running", created=NOW - 50),
        ],
        pod_uids={"a": "uid-a", "b": "uid-b", "old": "uid-old"},
        manager=None,
        manager_address=None,
        state_store_ready=True,
        job=None,
        stats=None,
    )
    after = scaler._with_retiring(context, ref, seen, NOW)
    assert [(p.name, p.deleting) for p in after.pods] == [("a", True), ("b", False), ("old", False)]
    assert context.of("wf").retiring == {"uid-a": NOW + 60}  # past its grace period, or gone: forgotten
    assert context.of("other").retiring == {"x": NOW}  # another workflow's pods are its own business
    exited = dataclasses.replace(seen, pods=[WorkerPod(name="a", phase="Succeeded", created=NOW - 50)])
    assert not scaler._with_retiring(context, ref, exited, NOW).pods[0].deleting  # so it is deleted
