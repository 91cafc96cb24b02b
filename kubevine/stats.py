"""What a manager says about its workflow: for `kubevine status`, the operator's autoscaler
and the metrics endpoint. One model, so the three never disagree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kubevine.resources import Resources


class WorkerStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

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

    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

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


class LibraryView(BaseModel):
    """A library as the manager sees it: where it runs and how busy it is."""

    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

    name: str
    mode: str  # fork | direct
    slots: int  # calls at once per instance
    functions: list[str] = Field(default_factory=list)
    instances: dict[str, int] = Field(default_factory=dict)  # by state: installing, ready
    active_calls: int = 0  # dispatched to an instance and not yet ended
    waiting_calls: int = 0  # waiting for an instance with a free slot
    broken: str | None = None  # why the manager gave up starting it


#: upper bounds (seconds) of the task wall-time histogram's buckets; the last is +Inf
WALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Histogram(BaseModel):
    """Counts of observations at or below each bound (cumulative, as Prometheus wants)."""

    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

    bounds: list[float] = Field(default_factory=lambda: list(WALL_BUCKETS))
    cumulative: list[int] = Field(default_factory=lambda: [0] * len(WALL_BUCKETS))
    count: int = 0
    sum: float = 0.0


class Perf(BaseModel):
    """The manager's performance counters, sampled every few seconds (``MANAGER perf`` lines)."""

    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

    sampled: float = 0.0  # unix time of the sample the rates come from
    dispatched: int = 0  # attempts sent to workers since the manager started
    completed: int = 0  # attempts that ended on a worker (any outcome)
    dispatch_rate: float = 0.0  # attempts dispatched per second, over the last interval
    complete_rate: float = 0.0  # attempts ended per second, over the last interval
    cores_total: float = 0.0  # cores of connected workers
    cores_in_use: float = 0.0  # cores committed to dispatched or running tasks
    transfers: dict[str, int] = Field(default_factory=dict)  # files moved, by source kind
    transfer_bytes: dict[str, int] = Field(default_factory=dict)  # bytes moved, by source kind
    cache_hits: int = 0  # task inputs a worker already held when the task was dispatched
    cache_misses: int = 0  # task inputs that had to be staged in
    # messages that carried those attempts: far fewer than attempts when batching works
    dispatch_messages: int = 0  # Dispatch messages sent to workers
    update_messages: int = 0  # WorkerUpdate messages that reported attempts ending
    result_messages: int = 0  # Results messages sent to clients
    task_wall: Histogram = Field(default_factory=Histogram)  # seconds per attempt, as workers measure


class ManagerStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")  # readers of a newer manager ignore new fields

    workflow: str
    manager_id: str
    address: str
    durable: bool
    time: float
    started: float
    tasks: dict[str, int] = Field(description="tasks held by the manager, by state")
    totals: dict[str, int] = Field(
        description="of the workflow (kept across manager restarts): submitted, done, ..."
    )
    unschedulable: int = 0
    demand: Resources = Resources()  # resources asked for by tasks waiting for a worker
    waiting: Load = Load()  # tasks waiting for a worker (ready, waiting, retrying)
    running: Load = Load()  # tasks on workers (dispatched or running)
    largest_waiting: Resources = Resources()
    workers: list[WorkerStatus] = Field(default_factory=list)
    clients: int = 0
    sessions: int = 0  # peers with a session open (clients, workers, admins such as `kubevine status`)
    recent_failures: list[Failure] = Field(default_factory=list)
    perf: Perf = Field(default_factory=Perf)
    libraries: list[LibraryView] = Field(default_factory=list)
    store_outage: float = 0.0  # seconds the state store (Redis) has been unreachable; 0 when fine
    refusing_work: bool = False  # the outage outlasted --redis-outage-grace: submissions are refused
    loading: int = 0  # a restarted manager still loading its tasks from the store: about how many are left
