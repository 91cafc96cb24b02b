"""TaskVine's manager verbs beyond submit and wait: tuning, hunger, stats, cancelling in bulk.

Part of :class:`kubevine.client.Manager` (a base class of it). Each verb keeps TaskVine's
meaning; where kubevine has a richer form of the same thing it says so (``m.status()`` is
the manager's full report, ``m.stats`` TaskVine's counters taken from it). Parameters that
only make sense for TaskVine's own engine are accepted and said once to have no effect, so a
TaskVine program runs unchanged and its author learns what does not apply.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kubevine.ids import TaskId
from kubevine.protocol import Cancel, Tune, _Msg
from kubevine.stats import ManagerStatus

if TYPE_CHECKING:
    from kubevine.clientio import Connection, Shared
    from kubevine.task import Task

log = logging.getLogger(__name__)

#: tune() names with a meaning here, and their defaults (TaskVine's)
CLIENT_TUNABLES: dict[str, float] = {"hungry-minimum": 10, "hungry-minimum-factor": 2}
#: tune() names the manager applies (sent to it)
MANAGER_TUNABLES = frozenset(
    {
        "wait-for-workers",
        "transient-error-interval",
        "worker-source-max-transfers",
        "max-library-retries",
        "temp-replica-count",
        "immediate-recovery",
        "peer-transfers",
    }
)
#: TaskVine's other tunables: accepted, without effect on kubevine's engine
INERT_TUNABLES = frozenset(
    {
        "attempt-schedule-depth",
        "category-steady-n-tasks",
        "default-transfer-rate",
        "disconnect-slow-workers-factor",
        "keepalive-interval",
        "keepalive-timeout",
        "load-from-shared-filesystem",
        "long-timeout",
        "short-timeout",
        "max-retrievals",
        "min-transfer-timeout",
        "monitor-interval",
        "prefer-dispatch",
        "proportional-resources",
        "proportional-whole-tasks",
        "ramp-down-heuristic",
        "resource-submit-multiplier",
        "sandbox-grow-factor",
        "transfer-outlier-factor",
        "transfer-replica-per-cycle",
        "transfer-temps-recovery",
        "wait-retrieve-many",
        "worker-retrievals",
        "watch-library-logfiles",
    }
)
_said: set[str] = set()


def _once(key: str, msg: str, *args: object) -> None:
    if key not in _said:
        _said.add(key)
        log.warning(msg, *args)


@dataclass(frozen=True)
class VineStats:
    """TaskVine's ``m.stats`` counters, read from the manager's status."""

    workers_connected: int
    workers_init: int
    workers_idle: int
    workers_busy: int
    workers_able: int
    tasks_waiting: int
    tasks_on_workers: int
    tasks_running: int
    tasks_with_results: int
    tasks_submitted: int
    tasks_dispatched: int
    tasks_done: int
    tasks_failed: int
    tasks_cancelled: int
    time_when_started: int  # microseconds since the epoch
    bytes_received: int
    total_cores: float
    total_memory: int
    total_disk: int
    total_gpus: int
    committed_cores: float
    committed_memory: int
    committed_disk: int
    committed_gpus: int

    @classmethod
    def of(cls, st: ManagerStatus, with_results: int) -> VineStats:
        ws = st.workers
        busy = sum(1 for w in ws if w.running + w.queued)
        return cls(
            workers_connected=len(ws),
            workers_init=0,
            workers_idle=len(ws) - busy,
            workers_busy=busy,
            workers_able=len(ws),
            tasks_waiting=st.waiting.tasks,
            tasks_on_workers=st.running.tasks,
            tasks_running=st.tasks.get("running", 0),
            tasks_with_results=with_results,
            tasks_submitted=st.totals.get("submitted", 0),
            tasks_dispatched=st.perf.dispatched,
            tasks_done=st.totals.get("done", 0),
            tasks_failed=st.totals.get("failed", 0),
            tasks_cancelled=st.totals.get("cancelled", 0),
            time_when_started=int(st.started * 1e6),
            bytes_received=sum(st.perf.transfer_bytes.values()),
            total_cores=sum(w.resources.cores for w in ws),
            total_memory=sum(w.resources.memory for w in ws),
            total_disk=sum(w.resources.disk for w in ws),
            total_gpus=sum(w.resources.gpus for w in ws),
            committed_cores=sum(w.committed.cores for w in ws),
            committed_memory=sum(w.committed.memory for w in ws),
            committed_disk=sum(w.committed.disk for w in ws),
            committed_gpus=sum(w.committed.gpus for w in ws),
        )


def hunger(st: ManagerStatus, minimum: float, factor: float) -> int:
    """How many more tasks the manager could use (TaskVine's ``hungry()``): at least
    ``minimum`` waiting tasks; with workers, as many as ``factor`` times their resources hold,
    counted in the average waiting task's size (or running task's when none waits)."""
    waiting = st.waiting.tasks
    floor = max(0, int(minimum) - waiting)
    if not st.workers:
        return floor
    sample = st.waiting if st.waiting.tasks else st.running
    n = max(1, sample.tasks)
    fits = []
    for r in ("cores", "memory", "disk", "gpus"):
        total = sum(float(getattr(w.resources, r)) for w in st.workers)
        committed = sum(float(getattr(w.committed, r)) for w in st.workers)
        avg = float(getattr(sample, r)) / n
        if avg > 0:
            fits.append(math.floor((factor * total - committed) / avg) - waiting)
    return max(floor, min(fits)) if fits else floor


def status_part(st: ManagerStatus, request: str) -> list[dict[str, Any]]:
    """TaskVine's ``status(request)``: one part of the report as a list of dicts."""
    if request == "manager":
        return [
            {"name": st.workflow, "port": int(st.address.rsplit(":", 1)[1]), **asdict(VineStats.of(st, 0))}
        ]
    if request == "workers":
        return [w.model_dump() for w in st.workers]
    if request == "libraries":
        return [lib.model_dump() for lib in st.libraries]
    if request == "tasks":
        return [{"state": k, "count": v} for k, v in st.tasks.items()]
    if request == "categories":
        return []
    raise ValueError(f"status({request!r}): manager, tasks, workers, libraries or categories")


class VineAPI:
    """TaskVine's extra manager verbs (a Manager provides ``_st``, ``_conn`` and the helpers)."""

    _st: Shared
    _conn: Connection
    _tunables: dict[str, float]

    def status(self, request: None = None, timeout: float = 10.0) -> ManagerStatus:
        raise NotImplementedError

    def _send_control(self, msg: _Msg, frames: list[bytes] | None = None) -> None:
        raise NotImplementedError

    def _send_tunable(self, name: str, value: float) -> None:
        """Tell the manager (its setting for the whole workflow)."""
        self._send_control(Tune(name=name, value=value))

    # ------------------------------------------------------------------ tuning

    def tune(self, name: str, value: float) -> int:
        """Set one of TaskVine's advanced parameters. Those with a meaning here take effect
        (``hungry-minimum``, ``hungry-minimum-factor`` here; ``wait-for-workers``,
        ``transient-error-interval``, ``worker-source-max-transfers``, ``max-library-retries``,
        ``temp-replica-count``, ``immediate-recovery`` at the manager); the others are
        accepted and said once to have no effect. Returns 0, or -1 for a name TaskVine does
        not have either."""
        if name in CLIENT_TUNABLES:
            self._tunables[name] = float(value)
            return 0
        if name in MANAGER_TUNABLES:
            self._tunables[name] = float(value)
            self._send_tunable(name, float(value))
            return 0
        if name in INERT_TUNABLES:
            _once(f"tune:{name}", "tune(%r): no effect in kubevine (its engine has no such knob)", name)
            return 0
        _once(f"tune:{name}", "tune(%r): not a TaskVine parameter", name)
        return -1

    def enable_peer_transfers(self) -> None:
        """Workers fetch files from each other (the default)."""
        self.tune("peer-transfers", 1)

    def disable_peer_transfers(self) -> None:
        """Workers fetch every file from the manager or its URL, never from each other."""
        self.tune("peer-transfers", 0)

    def hungry(self) -> int:
        """How many more tasks the manager could use now (0: it has enough)."""
        return hunger(
            self.status(),
            self._tunables.get("hungry-minimum", CLIENT_TUNABLES["hungry-minimum"]),
            self._tunables.get("hungry-minimum-factor", CLIENT_TUNABLES["hungry-minimum-factor"]),
        )

    @property
    def stats(self) -> VineStats:
        """TaskVine's counters (``m.stats.tasks_running``, ...), from the manager's status now;
        ``m.status()`` has the whole report."""
        with self._st.lock:
            with_results = len(self._st.done)
        return VineStats.of(self.status(), with_results)

    # ------------------------------------------------------------------ cancelling

    def _outstanding(self) -> list[Task]:
        with self._st.lock:
            return list(self._st.tasks.values())

    def _cancel(self, tasks: list[Task]) -> int:
        ids = [TaskId(t.id) for t in tasks if t.id is not None]
        if ids:
            self._send_control(Cancel(task_ids=ids))
        return len(ids)

    def cancel_by_task_tag(self, tag: str) -> int:
        """Cancel one unfinished task with this tag (TaskVine's meaning); 1 if there was one."""
        return self._cancel([t for t in self._outstanding() if t.tag == tag][:1])

    def cancel_all_by_tag(self, tag: str) -> int:
        """Cancel every unfinished task with this tag, also those still on their way to the
        manager; how many this client knows of."""
        self._send_control(Cancel(tag=tag))
        return sum(1 for t in self._outstanding() if t.tag == tag)

    def cancel_by_category(self, category: str) -> int:
        return self._cancel([t for t in self._outstanding() if t.category == category])

    def cancel_all(self) -> int:
        """Cancel every unfinished task; each comes back from ``wait`` with result "cancelled"."""
        return self._cancel(self._outstanding())

    # ------------------------------------------------------------------ the rest of TaskVine

    def log_debug_app(self, message: str) -> None:
        """A line from the application in the debug log (kubevine's: the ``kubevine.app`` logger)."""
        logging.getLogger("kubevine.app").debug("%s", message)

    def log_txn_app(self, message: str) -> None:
        """A line from the application in the transactions log."""
        logging.getLogger("kubevine.app").info("%s", message)

    def enable_monitoring(self, watchdog: bool = True, time_series: bool = False) -> bool:
        """kubevine measures every task (``t.resources_measured``) without being asked."""
        return True

    def set_scheduler(self, scheduler: str | int) -> None:
        """kubevine places each task where most of its input bytes are (TaskVine's "files")."""
        _once(
            "set_scheduler",
            "set_scheduler(%r): kubevine always prefers the worker holding the inputs",
            scheduler,
        )

    def set_category_mode(self, category: str | None, mode: str | int) -> None:
        _once("category_mode", 'set_category_mode: tasks get what they ask for (TaskVine\'s "fixed")')

    def set_category_resources_max(self, category: str, resources: dict[str, Any]) -> None:
        _once("category_max", "set_category_resources_max: give tasks their resources with t.set_cores/...")

    def set_category_resources_min(self, category: str, resources: dict[str, Any]) -> None:
        _once("category_min", "set_category_resources_min: give tasks their resources with t.set_cores/...")

    def task_state(self, task_id: int) -> int:
        """TaskVine's ``VINE_TASK_*`` state of a task of this client."""
        with self._st.lock:
            t = self._st.tasks.get(TaskId(task_id))
            if t is None:
                done = any(d.id == task_id for d in self._st.done)
                return 3 if done else 0  # waiting for retrieval, or unknown (or retrieved)
        return 2 if t.state == "submitted" else 0

    def set_draining_by_hostname(self, hostname: str, drain_mode: bool = True) -> int:
        """Drain the workers on ``hostname``: no new tasks; they leave once idle."""
        if not drain_mode:
            _once(
                "undrain",
                "set_draining_by_hostname(drain_mode=False): a drained worker has left; start another",
            )
            return 0
        ids = [w.id for w in self.status().workers if w.host == hostname or w.node == hostname]
        self._admin().drain(ids)
        return len(ids)

    def workers_shutdown(self, n: int = 0) -> int:
        """Release ``n`` workers (0: all); each finishes what it runs and leaves."""
        ws = self.status().workers
        ids = [w.id for w in (ws if n <= 0 else ws[:n])]
        self._admin().drain(ids)
        return len(ids)

    def check_library_exists(self, name: str) -> bool:
        return name in self._st.libraries

    def undeclare_function(self, fn: Any) -> None:
        """kubevine keeps no serialized copy of a function at the manager: nothing to drop."""

    def set_priority(self, priority: float) -> None:
        _once("mgr_priority", "set_priority on a manager: a kubevine worker pool serves one workflow")

    def set_property(self, name: str, value: Any) -> None:
        """TaskVine's catalog properties: kubevine has no catalog."""

    def set_min_task_id(self, minid: int) -> int:
        """Task ids come from the manager in blocks; returns the next one this client gives."""
        with self._st.lock:
            return self._st.next_id

    def _admin(self) -> Any:
        from kubevine.admin import Admin

        creds = self._conn.credentials
        return Admin(self._conn.address, creds.token, encrypt=creds.encrypt)

    def set_password(self, password: str) -> None:
        raise ValueError(
            "kubevine's workflows share a token (Manager(token=...), $KUBEVINE_TOKEN), not a password"
        )

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        """Return once ``n`` workers are connected (kubevine's)."""
        deadline = time.monotonic() + timeout
        while len(self.status().workers) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers did not connect within {timeout}s")
            time.sleep(0.1)
