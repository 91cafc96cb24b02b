"""What a manager says about its workflow: for `kubevine status`, the operator's autoscaler
and the metrics endpoint. One model, so the three never disagree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kubevine.resources import Resources


class WorkerStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    node: str
    host: str
    state: str
    resources: Resources
    committed: Resources
    running: int
    queued: int
    idle_seconds: float | None = None  # None while it has tasks
    idle_since: float | None = None  # unix time it became idle; None while it has tasks
    draining: bool = False
    pod: str | None = None  # the Kubernetes pod it runs in, if any
    holds_unique_temps: bool = False  # the only replica of a temp file still needed
    cached_files: int = 0


class Load(BaseModel):
    """How many tasks, and the resources they ask for in total."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = 0
    cores: float = 0.0
    memory: int = 0
    disk: int = 0
    gpus: int = 0


class Failure(BaseModel):
    task_id: int
    outcome: str
    error: str | None = None
    exit_code: int | None = None


class ManagerStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str
    manager_id: str
    address: str
    durable: bool
    time: float
    started: float
    tasks: dict[str, int] = Field(description="tasks held by the manager, by state")
    totals: dict[str, int] = Field(description="since the manager started: submitted, done, ...")
    unschedulable: int = 0
    demand: Resources = Resources()  # resources asked for by tasks waiting for a worker
    waiting: Load = Load()  # tasks waiting for a worker (ready, waiting, retrying)
    running: Load = Load()  # tasks on workers (dispatched or running)
    largest_waiting: Resources = Resources()
    workers: list[WorkerStatus] = Field(default_factory=list)
    clients: int = 0
    recent_failures: list[Failure] = Field(default_factory=list)
