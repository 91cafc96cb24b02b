"""From what the manager publishes (`kubevine.stats.ManagerStatus`) to what the autoscaler
decides on (`kubevine.operator.autoscale.ManagerStats`).

Exists because the two models answer different questions and change at different paces:
the manager's status serves `kubevine status`, Prometheus and the operator, and grows with
the engine; the autoscaler's input is the small, stable set of numbers its rules are
written and tested against. This one pure function is the only place that knows both, so
an engine change touches one mapping instead of the scaling rules.

Choices made here:

* the autoscaler's models are validated from the manager's (same field names), not copied
  field by field: a value the scaling rules cannot take (a negative count) is refused here,
  where the mismatch is, instead of surfacing as a strange decision;
* a worker's `running_tasks` counts the tasks queued on it as well as those running: a
  worker holding a queued task is not idle, and draining it would take the task back
  (a kill and a requeue, which the autoscaler promises never to cause);
* `done`/`failed` are the manager's totals since it started (what finished is no longer
  held by the manager), `waiting`/`running` what it holds now;
* the manager may run a newer image than the operator (`spec.image` is the workflow's):
  `kubevine.stats` models ignore fields they do not know, so a newer status still parses.
"""

from __future__ import annotations

from kubevine.operator.autoscale import Demand, ManagerStats, TaskCounts, TaskLoad, TaskSize, WorkerLoad
from kubevine.stats import ManagerStatus, WorkerStatus


def _worker(worker: WorkerStatus) -> WorkerLoad:
    busy = worker.running + worker.queued
    return WorkerLoad.model_validate(
        {
            "id": worker.id,
            "pod": worker.pod,
            "node": worker.node or None,
            "running_tasks": busy,
            "idle_since": worker.idle_since if busy == 0 else None,
            "draining": worker.draining,
            "holds_unique_temps": worker.holds_unique_temps,
        }
    )


def manager_stats(status: ManagerStatus) -> ManagerStats:
    """The autoscaler's view of one manager status."""
    return ManagerStats(
        time=status.time,
        demand=Demand(
            waiting=TaskLoad.model_validate(status.waiting, from_attributes=True),
            running=TaskLoad.model_validate(status.running, from_attributes=True),
            largest_waiting=TaskSize.model_validate(status.largest_waiting, from_attributes=True),
        ),
        workers=[_worker(w) for w in status.workers],
        tasks=TaskCounts(
            waiting=status.waiting.tasks,
            running=status.running.tasks,
            done=status.totals.get("done", 0),
            failed=status.totals.get("failed", 0),
        ),
    )
