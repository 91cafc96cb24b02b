"""From what the manager publishes (`kubevine.stats.ManagerStatus`) to what the autoscaler
decides on (`kubevine.operator.autoscale.ManagerStats`).

Exists because the two models answer different questions and change at different paces:
the manager's status serves `kubevine status`, Prometheus and the operator, and grows with
the engine; the autoscaler's input is the small, stable set of numbers its rules are
written and tested against. This one pure function is the only place that knows both, so
an engine change touches one mapping instead of the scaling rules.

Choices made here:

* a worker's `running_tasks` counts the tasks queued on it as well as those running: a
  worker holding a queued task is not idle, and draining it would take the task back
  (a kill and a requeue, which the autoscaler promises never to cause);
* `done`/`failed` are the manager's totals since it started (what finished is no longer
  held by the manager), `waiting`/`running` what it holds now;
* the manager may run a newer image than the operator (`spec.image` is the workflow's),
  so `parse_status` drops fields this operator's `ManagerStatus` does not know instead of
  refusing the whole status (the model itself forbids extra fields).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from kubevine.operator.autoscale import (
    Demand,
    ManagerStats,
    TaskCounts,
    TaskLoad,
    TaskSize,
    WorkerLoad,
)
from kubevine.resources import Resources
from kubevine.stats import Load, ManagerStatus, WorkerStatus


def _load(load: Load) -> TaskLoad:
    return TaskLoad(
        tasks=load.tasks,
        cores=load.cores,
        memory=load.memory,
        disk=load.disk,
        gpus=load.gpus,
    )


def _size(resources: Resources) -> TaskSize:
    return TaskSize(
        cores=resources.cores,
        memory=resources.memory,
        disk=resources.disk,
        gpus=resources.gpus,
    )


def _worker(worker: WorkerStatus) -> WorkerLoad:
    return WorkerLoad(
        id=worker.id,
        pod=worker.pod,
        node=worker.node or None,
        running_tasks=worker.running + worker.queued,
        idle_since=worker.idle_since if worker.running + worker.queued == 0 else None,
        draining=worker.draining,
        holds_unique_temps=worker.holds_unique_temps,
    )


def manager_stats(status: ManagerStatus) -> ManagerStats:
    """The autoscaler's view of one manager status."""
    return ManagerStats(
        time=status.time,
        demand=Demand(
            waiting=_load(status.waiting),
            running=_load(status.running),
            largest_waiting=_size(status.largest_waiting),
        ),
        workers=[_worker(w) for w in status.workers],
        tasks=TaskCounts(
            waiting=status.waiting.tasks,
            running=status.running.tasks,
            done=status.totals.get("done", 0),
            failed=status.totals.get("failed", 0),
        ),
    )


def _model_in(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("one" | "list" | "dict", Model) when `annotation` holds a model; None otherwise."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "one", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _model_in(arg)
            if found is not None:
                return found
    elif origin is list and args:
        inner = _model_in(args[0])
        return ("list", inner[1]) if inner and inner[0] == "one" else None
    elif origin is dict and len(args) == 2:
        inner = _model_in(args[1])
        return ("dict", inner[1]) if inner and inner[0] == "one" else None
    return None


def known_fields(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models nested in it) does not declare."""
    if not isinstance(data, dict):
        return data
    kept: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        value, nested = data[key], _model_in(field.annotation)
        if nested is not None:
            how, inner = nested
            if how == "one":
                value = known_fields(inner, value)
            elif how == "list" and isinstance(value, list):
                value = [known_fields(inner, v) for v in value]
            elif how == "dict" and isinstance(value, dict):
                value = {k: known_fields(inner, v) for k, v in value.items()}
        kept[key] = value
    return kept


def parse_status(raw: str | bytes) -> ManagerStatus:
    """A manager's published status, ignoring fields added by a newer manager."""
    return ManagerStatus.model_validate(known_fields(ManagerStatus, json.loads(raw)))
