"""The operator's Prometheus metrics: what the autoscaler wanted, what it got, and why.

Exists so that a platform engineer can graph, per workflow, desired against actual
workers and see each decision's cause next to the managers' own metrics, and alert on an
operator whose handlers keep failing — without reading Events. The kopf handlers record
what each step decided (`OperatorMetrics.record_step`), every error they hit
(`record_error`) and each workflow's phase as the watch stream shows it
(`record_phase`, `forget`); `serve` answers `/metrics` from a thread of its own, reading
only those records, so a scrape never waits on the event loop nor touches the cluster.

Series (labels `namespace`, `workflow` unless said otherwise):

* `kubevine_operator_workers_desired`, `kubevine_operator_workers_actual` (workers
  connected to the manager and serving), `kubevine_operator_workers{state}` (pending,
  connected, draining), `kubevine_operator_pool_pods` (worker pods that exist, the number
  `max` bounds), `kubevine_operator_pool_limit{bound}` (min, max of the spec);
* `kubevine_operator_last_decision{action,cause}` (always 1: the labels are the last
  step's action and cause, bounded words — the full sentence is in
  `status.lastScaling` and the Events), `kubevine_operator_last_decision_timestamp_seconds`,
  `kubevine_operator_scaling_decisions_total{action}`,
  `kubevine_operator_worker_pods_created_total`, `kubevine_operator_workers_drained_total`,
  `kubevine_operator_worker_pods_deleted_total`;
* `kubevine_operator_tasks{state}` (the manager's tasks as the operator last saw them),
  `kubevine_operator_manager_reachable`;
* operator-wide: `kubevine_operator_workflows{phase}`,
  `kubevine_operator_handler_errors_total{handler,error}`,
  `kubevine_operator_autoscale_step_seconds` (histogram).

A workflow's series disappear when it is deleted. Only the active replica of a peered
operator runs handlers, so a paused replica serves the operator-wide series alone.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubevine.operator.autoscale import DecisionAction, ScalingDecision
from kubevine.operator.status import Phase

log = logging.getLogger(__name__)

Handler = Literal["children", "autoscale", "expire"]
ErrorKind = Literal["invalid_spec", "kube_api", "unexpected"]
#: The handler/error pairs that can happen (exposed at 0 from the start, so a rate works).
ERROR_KINDS: tuple[tuple[Handler, ErrorKind], ...] = (
    ("children", "invalid_spec"),
    ("children", "kube_api"),
    ("children", "unexpected"),
    ("autoscale", "kube_api"),
    ("autoscale", "unexpected"),
    ("expire", "kube_api"),
)
PHASES: tuple[str, ...] = get_args(Phase)
WORKER_STATES = ("pending", "connected", "draining")
TASK_STATES = ("waiting", "running", "done", "failed")
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class WorkflowFigures:
    """What the last autoscaler step of one workflow saw and did, and what it did before."""

    desired: int = 0
    actual: int = 0
    workers: dict[str, int] = field(default_factory=dict)
    pool_pods: int = 0
    pool_min: int = 0
    pool_max: int = 0
    tasks: dict[str, int] | None = None
    manager_reachable: bool = False
    action: DecisionAction | None = None
    cause: str = ""
    decided_at: float = 0.0
    actions: Counter[str] = field(default_factory=Counter)
    created: int = 0
    drained: int = 0
    deleted: int = 0


class OperatorMetrics(Collector):
    """Records written by the kopf handlers (one event loop), read by scrapes (another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workflows: dict[tuple[str, str], WorkflowFigures] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._errors: Counter[tuple[str, str]] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.step_seconds = Histogram(
            "kubevine_operator_autoscale_step_seconds",
            "Time one autoscaler step takes (observe, decide, act), all workflows",
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)

    # ------------------------------------------------------------ records (event loop)

    def record_step(
        self,
        namespace: str,
        name: str,
        *,
        decision: ScalingDecision | None,
        status: Mapping[str, Any],
        pool_min: int,
        pool_max: int,
        actual: int,
        pool_pods: int,
        tasks: Mapping[str, int] | None,
        manager_reachable: bool,
        created: int,
        drained: int,
        deleted: int,
        now: float,
    ) -> None:
        """One autoscaler step of a workflow, from its decision and the status it computed."""
        workers = status.get("workers") or {}
        key = (namespace, name)
        with self._lock:
            figures = self._workflows.setdefault(key, WorkflowFigures())
            figures.desired = int(workers.get("desired", 0))
            figures.actual = actual
            figures.workers = {s: int(workers.get(s, 0)) for s in WORKER_STATES}
            figures.pool_pods = pool_pods
            figures.pool_min, figures.pool_max = pool_min, pool_max
            figures.tasks = dict(tasks) if tasks is not None else figures.tasks
            figures.manager_reachable = manager_reachable
            if decision is not None:
                figures.action, figures.cause, figures.decided_at = decision.action, decision.cause, now
                figures.actions[decision.action] += 1
            figures.created += created
            figures.drained += drained
            figures.deleted += deleted
            if status.get("phase"):
                self._phases[key] = str(status["phase"])

    def record_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """The workflow's phase as the watch stream shows it (None: no status yet)."""
        with self._lock:
            self._phases[(namespace, name)] = phase or "Pending"

    def record_error(self, handler: Handler, error: ErrorKind) -> None:
        """A handler failed (it will be retried by kopf or by the next timer step)."""
        with self._lock:
            self._errors[(handler, error)] += 1

    def forget(self, namespace: str, name: str) -> None:
        """The workflow is gone: its series end."""
        with self._lock:
            self._workflows.pop((namespace, name), None)
            self._phases.pop((namespace, name), None)

    # ------------------------------------------------------------ scrapes (HTTP thread)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            workflows = [(k, _copy(f)) for k, f in sorted(self._workflows.items())]
            phases = Counter(self._phases.values())
            errors = dict(self._errors)
        labels = ["namespace", "workflow"]

        def gauge(metric: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(metric, doc, labels=[*labels, *extra])

        def counter(metric: str, doc: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(metric, doc, labels=[*labels, *extra])

        desired = gauge("kubevine_operator_workers_desired", "Workers the autoscaler wants")
        actual = gauge("kubevine_operator_workers_actual", "Workers connected to the manager and serving")
        workers = gauge("kubevine_operator_workers", "Workers by state", ("state",))
        pods = gauge("kubevine_operator_pool_pods", "Worker pods that exist (bounded by the pool's max)")
        limit = gauge("kubevine_operator_pool_limit", "The pool's bounds from the spec", ("bound",))
        last = gauge(
            "kubevine_operator_last_decision",
            "The last autoscaler step's action and cause (always 1; see status.lastScaling for the text)",
            ("action", "cause"),
        )
        last_time = gauge("kubevine_operator_last_decision_timestamp_seconds", "When the last step decided")
        decisions = counter("kubevine_operator_scaling_decisions", "Autoscaler steps by action", ("action",))
        created = counter("kubevine_operator_worker_pods_created", "Worker pods created by the autoscaler")
        drained = counter("kubevine_operator_workers_drained", "Workers the autoscaler asked to drain")
        deleted = counter("kubevine_operator_worker_pods_deleted", "Worker pods deleted by the autoscaler")
        tasks = gauge(
            "kubevine_operator_tasks", "The manager's tasks as the operator last saw them", ("state",)
        )
        reachable = gauge("kubevine_operator_manager_reachable", "1 if the last step got the manager's stats")
        for (namespace, name), f in workflows:
            wf = [namespace, name]
            desired.add_metric(wf, f.desired)
            actual.add_metric(wf, f.actual)
            for state in WORKER_STATES:
                workers.add_metric([*wf, state], f.workers.get(state, 0))
            pods.add_metric(wf, f.pool_pods)
            limit.add_metric([*wf, "min"], f.pool_min)
            limit.add_metric([*wf, "max"], f.pool_max)
            if f.action is not None:
                last.add_metric([*wf, f.action, f.cause], 1)
                last_time.add_metric(wf, f.decided_at)
            for action in get_args(DecisionAction):
                decisions.add_metric([*wf, action], f.actions.get(action, 0))
            created.add_metric(wf, f.created)
            drained.add_metric(wf, f.drained)
            deleted.add_metric(wf, f.deleted)
            if f.tasks is not None:
                for state in TASK_STATES:
                    tasks.add_metric([*wf, state], f.tasks.get(state, 0))
            reachable.add_metric(wf, 1 if f.manager_reachable else 0)
        yield from (desired, actual, workers, pods, limit, last, last_time, decisions)
        yield from (created, drained, deleted, tasks, reachable)

        by_phase = GaugeMetricFamily(
            "kubevine_operator_workflows", "VineWorkflows by phase", labels=["phase"]
        )
        for phase in PHASES:
            by_phase.add_metric([phase], phases.get(phase, 0))
        yield by_phase
        failures = CounterMetricFamily(
            "kubevine_operator_handler_errors",
            "Errors of the operator's handlers (retried by kopf or by the next step)",
            labels=["handler", "error"],
        )
        for pair in sorted(set(ERROR_KINDS) | set(errors)):
            failures.add_metric(list(pair), errors.get(pair, 0))
        yield failures

    def serve(self, port: int, host: str = "0.0.0.0") -> WSGIServer:
        """Serve `/metrics` on `host:port` from a daemon thread; the server (to shut down)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


def _copy(f: WorkflowFigures) -> WorkflowFigures:
    return WorkflowFigures(
        desired=f.desired,
        actual=f.actual,
        workers=dict(f.workers),
        pool_pods=f.pool_pods,
        pool_min=f.pool_min,
        pool_max=f.pool_max,
        tasks=dict(f.tasks) if f.tasks is not None else None,
        manager_reachable=f.manager_reachable,
        action=f.action,
        cause=f.cause,
        decided_at=f.decided_at,
        actions=Counter(f.actions),
        created=f.created,
        drained=f.drained,
        deleted=f.deleted,
    )
