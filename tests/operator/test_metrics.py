"""The operator's Prometheus /metrics, scraped over HTTP as Prometheus would: desired against
actual workers, the last decision's action and cause as bounded labels, handler errors,
workflows by phase, and series that end when a workflow is deleted."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubevine.operator import handlers
from kubevine.operator.autoscale import (
    Demand,
    ManagerStats,
    ScalingPolicy,
    TaskCounts,
    TaskLoad,
    WorkerLoad,
    WorkerPod,
    decide,
)
from kubevine.operator.kube import KubeApi
from kubevine.operator.metrics import OperatorMetrics
from kubevine.operator.run import build_parser
from kubevine.operator.scaler import Context
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import WorkersSpec
from kubevine.operator.status import Observed, compute_status

NOW = 1_767_323_045.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def served() -> Iterator[tuple[OperatorMetrics, str]]:
    metrics = OperatorMetrics()
    server = metrics.serve(0, "127.0.0.1")
    try:
        yield metrics, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as rsp:
        assert rsp.status == 200
        text = rsp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def step(
    metrics: OperatorMetrics,
    workers: WorkersSpec,
    stats: ManagerStats,
    pods: list[WorkerPod],
    name: str = "wf",
) -> None:
    """One autoscaler step, decided and reported by the real pure functions."""
    decision = decide(workers, stats, pods, NOW, None, ScalingPolicy())
    status = compute_status(
        Observed(generation=1, manager_available=True, pods=pods, stats=stats, decision=decision), None, NOW
    )
    known = {w.pod for w in stats.workers if not w.draining}
    metrics.record_step(
        "team",
        name,
        decision=decision,
        status=status,
        pool_min=workers.min,
        pool_max=workers.max,
        actual=sum(1 for p in pods if p.name in known),
        pool_pods=len(pods),
        tasks=stats.tasks.model_dump(),
        manager_reachable=True,
        created=decision.create,
        drained=len(decision.drain),
        deleted=len(decision.delete),
        now=NOW,
    )


def demand_stats(waiting: int, *connected: str) -> ManagerStats:
    return ManagerStats(
        time=NOW,
        demand=Demand(waiting=TaskLoad(tasks=waiting, cores=waiting, memory=waiting)),
        workers=[WorkerLoad(id=f"w-{p}", pod=p, running_tasks=1) for p in connected],
        tasks=TaskCounts(waiting=waiting),
    )


def test_desired_and_actual_workers_converge_as_the_pool_grows(served: tuple[OperatorMetrics, str]) -> None:
    metrics, url = served
    workers = WorkersSpec(min=0, max=3, cores=1, memory=1024)
    step(metrics, workers, demand_stats(300), [])
    first = scrape(url)
    assert value(first, "kubevine_operator_workers_desired", namespace="team", workflow="wf") == 3
    assert value(first, "kubevine_operator_workers_actual", namespace="team", workflow="wf") == 0
    assert value(first, "kubevine_operator_last_decision", namespace="team", workflow="wf",
                 action="scale_up", cause="max") == 1  # fmt: skip
    assert value(first, "kubevine_operator_pool_limit", namespace="team", workflow="wf", bound="max") == 3
    assert value(first, "kubevine_operator_tasks", namespace="team", workflow="wf", state="waiting") == 300

    pods = [WorkerPod(name=n, phase="Running", created=NOW - 5) for n in "abc"]
    step(metrics, workers, demand_stats(297, "a", "b", "c"), pods)
    later = scrape(url)
    assert value(later, "kubevine_operator_workers_desired", namespace="team", workflow="wf") == 3
    assert value(later, "kubevine_operator_workers_actual", namespace="team", workflow="wf") == 3
    assert value(later, "kubevine_operator_workers", namespace="team", workflow="wf", state="connected") == 3
    assert value(later, "kubevine_operator_pool_pods", namespace="team", workflow="wf") == 3
    last = [k for k in later if k[0] == "kubevine_operator_last_decision"]
    assert len(last) == 1  # one series per workflow: the labels change, the count does not grow
    assert dict(last[0][1])["action"] == "steady"
    steps = {
        action: value(later, "kubevine_operator_scaling_decisions_total", namespace="team", workflow="wf",
                      action=action)
        for action in ("scale_up", "steady", "scale_down", "hold")
    }  # fmt: skip
    assert steps == {"scale_up": 1, "steady": 1, "scale_down": 0, "hold": 0}
    assert value(later, "kubevine_operator_worker_pods_created_total", namespace="team", workflow="wf") == 3


def test_handler_errors_are_counted_from_zero(served: tuple[OperatorMetrics, str]) -> None:
    metrics, url = served
    before = scrape(url)
    assert value(before, "kubevine_operator_handler_errors_total", handler="autoscale", error="kube_api") == 0
    metrics.record_error("autoscale", "kube_api")
    metrics.record_error("autoscale", "kube_api")
    metrics.record_error("children", "invalid_spec")
    after = scrape(url)
    errors = "kubevine_operator_handler_errors_total"
    assert value(after, errors, handler="autoscale", error="kube_api") == 2
    assert value(after, errors, handler="children", error="invalid_spec") == 1


def context() -> Context:
    ctx = Context(settings=OperatorSettings(), kube=cast(KubeApi, None), policy=ScalingPolicy())
    ctx.of("u1").secret_data = {"token": "dA=="}
    return ctx


def body(name: str, phase: str | None, uid: str = "u1") -> dict[str, Any]:
    status = {"phase": phase} if phase else {}
    return {"metadata": {"namespace": "team", "name": name, "uid": uid}, "status": status}


def test_workflows_are_counted_by_phase_and_a_deleted_one_leaves_no_series() -> None:
    ctx = context()
    handlers.watched(ctx, None, body("a", None))
    handlers.watched(ctx, "ADDED", body("b", "Running", uid="u2"))
    handlers.watched(ctx, "MODIFIED", body("c", "Invalid", uid="u3"))
    handlers.watched(ctx, "MODIFIED", body("a", "Running"))
    step(ctx.metrics, WorkersSpec(min=0, max=3, cores=1, memory=1024), demand_stats(1), [], name="a")
    server = ctx.metrics.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        samples = scrape(url)
        phases = {p: value(samples, "kubevine_operator_workflows", phase=p) for p in ("Running", "Invalid")}
        assert phases == {"Running": 2, "Invalid": 1}
        assert value(samples, "kubevine_operator_workflows", phase="Failed") == 0
        assert value(samples, "kubevine_operator_workers_desired", namespace="team", workflow="a") == 1

        handlers.watched(ctx, "DELETED", body("a", "Running"))
        gone = scrape(url)
        assert value(gone, "kubevine_operator_workflows", phase="Running") == 1
        assert not [k for k in gone if ("workflow", "a") in k[1]]
        assert "u1" not in ctx.memory  # what the operator remembered about it is dropped too
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_port_comes_from_the_flag_else_the_setting() -> None:
    assert OperatorSettings().metrics_port == 9091
    assert OperatorSettings.from_env({"KUBEVINE_OPERATOR_METRICS_PORT": "9300"}).metrics_port == 9300
    assert build_parser().parse_args(["--metrics-port", "0"]).metrics_port == 0
    assert build_parser().parse_args([]).metrics_port is None  # then the setting decides
