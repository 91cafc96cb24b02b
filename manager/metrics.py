"""Performance counters, snapshots and the Prometheus endpoint of the manager.

Three audiences read the same figures: ``kubevine status`` (a person), the operator's
autoscaler (the published :class:`~kubevine.stats.ManagerStatus`) and Prometheus
(``/metrics``). So the manager counts once, here:

* :class:`Counters` is bumped by the service's loop as it handles whole messages
  (a dispatch batch, a worker update, a file served) -- never per-task bookkeeping beyond
  one histogram bucket per finished attempt;
* every few seconds the loop builds a ``ManagerStatus`` (with :meth:`Counters.perf`
  filling its ``perf`` section), publishes it, writes it to the transactions log as a
  ``MANAGER perf`` line and hands it to :meth:`MetricsServer.update`;
* :class:`MetricsServer` answers ``/metrics`` and ``/healthz`` from a thread of its own,
  reading only the last snapshot, so a scrape never touches live scheduler state and
  never takes a lock the loop waits on.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kubevine.manager.libraries import InstanceState
from kubevine.protocol import Assignment, AttemptResult
from kubevine.states import FINAL, TaskState
from kubevine.stats import WALL_BUCKETS, Histogram, ManagerStatus, Perf
from kubevine.txformat import SOURCES, TASK_STATES
from kubevine.vine_api import VineStats

log = logging.getLogger(__name__)


class Counters:
    """What happened since the manager started; updated by the manager loop only."""

    def __init__(self) -> None:
        self.dispatched = 0
        self.completed = 0
        self.transfers = dict.fromkeys(SOURCES, 0)
        self.transfer_bytes = dict.fromkeys(SOURCES, 0)
        self.cache_hits = 0
        self.cache_misses = 0
        self.dispatch_messages = 0
        self.update_messages = 0
        self.result_messages = 0
        self._bounds = WALL_BUCKETS
        self._buckets = [0] * (len(WALL_BUCKETS) + 1)  # the last one: above every bound
        self._wall_sum = 0.0
        self._last: tuple[float, int, int] | None = None  # (time, dispatched, completed)
        self._rates = (0.0, 0.0)
        self._sampled = 0.0

    # ------------------------------------------------------------ events

    def dispatch(self, assignments: Sequence[Assignment]) -> None:
        """A batch of attempts went to a worker; inputs it holds already are cache hits."""
        self.dispatched += len(assignments)
        self.dispatch_messages += 1
        inputs = staged = 0
        for a in assignments:
            inputs += len(a.spec.inputs)
            staged += len(a.stage)
        self.cache_hits += inputs - staged
        self.cache_misses += staged

    def attempts_ended(self, results: Iterable[AttemptResult]) -> None:
        bounds, buckets = self._bounds, self._buckets
        if results:
            self.update_messages += 1
        for r in results:
            self.completed += 1
            self._wall_sum += r.wall_time
            buckets[bisect.bisect_left(bounds, r.wall_time)] += 1

    def transfer(self, source: str, nbytes: int) -> None:
        self.transfers[source] = self.transfers.get(source, 0) + 1
        self.transfer_bytes[source] = self.transfer_bytes.get(source, 0) + nbytes

    # ------------------------------------------------------------ snapshots

    def sample(self, now: float) -> None:
        """Take a rate sample: dispatch and completion rates since the previous one."""
        if self._last is not None:
            t, d, c = self._last
            dt = now - t
            if dt > 0:
                self._rates = ((self.dispatched - d) / dt, (self.completed - c) / dt)
        self._last = (now, self.dispatched, self.completed)
        self._sampled = now

    def histogram(self) -> Histogram:
        cumulative, total = [], 0
        for n in self._buckets[:-1]:
            total += n
            cumulative.append(total)
        return Histogram(
            bounds=list(self._bounds),
            cumulative=cumulative,
            count=total + self._buckets[-1],
            sum=self._wall_sum,
        )

    def perf(self, cores_total: float, cores_in_use: float) -> Perf:
        return Perf(
            sampled=self._sampled,
            dispatched=self.dispatched,
            completed=self.completed,
            dispatch_rate=self._rates[0],
            complete_rate=self._rates[1],
            cores_total=cores_total,
            cores_in_use=cores_in_use,
            transfers=dict(self.transfers),
            transfer_bytes=dict(self.transfer_bytes),
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            dispatch_messages=self.dispatch_messages,
            update_messages=self.update_messages,
            result_messages=self.result_messages,
            task_wall=self.histogram(),
        )


# ------------------------------------------------------------------ Prometheus


class StatusCollector(Collector):
    """Prometheus metrics made from the last :class:`ManagerStatus` snapshot."""

    def __init__(self, snapshot: Callable[[], ManagerStatus | None]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        st = self.snapshot()
        if st is None:
            return
        m = _Families(st.workflow)
        yield from _task_metrics(m, st)
        yield from _transfer_metrics(m, st.perf)
        yield from _library_metrics(m, st)
        connected = sum(1 for w in st.workers if w.state != "recovering")
        yield m.gauge("kubevine_workers_connected", "Workers connected to the manager", connected)
        yield m.gauge(
            "kubevine_workers_draining", "Workers draining", sum(1 for w in st.workers if w.draining)
        )
        yield m.gauge("kubevine_cores_total", "Cores of connected workers", st.perf.cores_total)
        yield m.gauge(
            "kubevine_cores_in_use", "Cores committed to dispatched or running tasks", st.perf.cores_in_use
        )
        yield m.gauge("kubevine_clients_connected", "Clients connected", st.clients)
        yield m.gauge("kubevine_unschedulable_tasks", "Tasks larger than every worker", st.unschedulable)
        yield m.gauge("kubevine_snapshot_timestamp_seconds", "When these figures were taken", st.time)
        yield m.gauge("kubevine_sessions", "Sessions open (clients, workers, status callers)", st.sessions)
        yield m.gauge(
            "kubevine_restore_tasks_left",
            "Stored tasks a restarted manager has still to load (it serves meanwhile)",
            st.loading,
        )
        yield from _taskvine_metrics(m, st)


class _Families:
    """Metric families of one workflow (every metric has its ``workflow`` label)."""

    def __init__(self, workflow: str) -> None:
        self.labels = ["workflow"]
        self.wf = [workflow]

    def gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=self.labels)
        g.add_metric(self.wf, value)
        return g

    def counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=self.labels)
        c.add_metric(self.wf, value)
        return c


def _task_metrics(m: _Families, st: ManagerStatus) -> Iterator[Metric]:
    labels, wf, p = m.labels, m.wf, st.perf
    tasks = GaugeMetricFamily(
        "kubevine_tasks", "Tasks held by the manager, by state", labels=[*labels, "state"]
    )
    for state in TASK_STATES:
        tasks.add_metric([*wf, state], st.tasks.get(state, 0))
    yield tasks
    totals = CounterMetricFamily(
        "kubevine_tasks_finished", "Tasks that reached a final state", labels=[*labels, "state"]
    )
    for state in (s.value for s in TaskState if s in FINAL):
        totals.add_metric([*wf, state], st.totals.get(state, 0))
    yield totals
    yield m.counter("kubevine_tasks_submitted", "Tasks submitted", st.totals.get("submitted", 0))
    yield m.counter(
        "kubevine_tasks_retried", "Attempts that failed and were retried", st.totals.get("retried", 0)
    )
    yield m.counter("kubevine_tasks_dispatched", "Attempts sent to workers", p.dispatched)
    yield m.counter("kubevine_tasks_completed", "Attempts that ended on a worker (any outcome)", p.completed)
    yield m.gauge("kubevine_dispatch_rate", "Attempts dispatched per second, last interval", p.dispatch_rate)
    yield m.gauge("kubevine_complete_rate", "Attempts ended per second, last interval", p.complete_rate)
    h = p.task_wall
    hist = HistogramMetricFamily(
        "kubevine_task_wall_seconds", "Wall time of attempts, as measured on workers", labels=labels
    )
    buckets = [(_bound(b), float(n)) for b, n in zip(h.bounds, h.cumulative)] + [("+Inf", float(h.count))]
    hist.add_metric(wf, buckets, h.sum)
    yield hist


def _transfer_metrics(m: _Families, p: Perf) -> Iterator[Metric]:
    labels, wf = [*m.labels, "source"], m.wf
    transfers = CounterMetricFamily(
        "kubevine_transfers", "Files moved to workers, by source kind", labels=labels
    )
    moved = CounterMetricFamily(
        "kubevine_transfer_bytes", "Bytes moved to workers, by source kind", labels=labels
    )
    for src in SOURCES:
        transfers.add_metric([*wf, src], p.transfers.get(src, 0))
        moved.add_metric([*wf, src], p.transfer_bytes.get(src, 0))
    yield transfers
    yield moved
    yield m.counter("kubevine_cache_hits", "Task inputs already on the worker at dispatch", p.cache_hits)
    yield m.counter("kubevine_cache_misses", "Task inputs that had to be staged in", p.cache_misses)


def _library_metrics(m: _Families, st: ManagerStatus) -> Iterator[Metric]:
    labels, wf = [*m.labels, "library", "state"], m.wf
    instances = GaugeMetricFamily(
        "kubevine_library_instances", "Library instances on workers, by state", labels=labels
    )
    calls = GaugeMetricFamily(
        "kubevine_library_calls", "Function calls of a library, by state", labels=labels
    )
    for lib in st.libraries:
        for state in InstanceState:
            instances.add_metric([*wf, lib.name, state.value], lib.instances.get(state.value, 0))
        calls.add_metric([*wf, lib.name, "active"], lib.active_calls)
        calls.add_metric([*wf, lib.name, "waiting"], lib.waiting_calls)
    yield instances
    yield calls


def _taskvine_metrics(m: _Families, st: ManagerStatus) -> Iterator[Metric]:
    """TaskVine's names beside kubevine's (its ``prometheus=`` exporter: one gauge ``vine_<key>``
    per numeric field of ``status("manager")``), from the same snapshot, for dashboards made
    for TaskVine. Only the fields kubevine can give are there (``m.stats`` has the same ones)."""
    held = sum(st.tasks.get(s.value, 0) for s in FINAL)  # finished, result not yet collected
    for key, value in asdict(VineStats.of(st, held)).items():
        yield m.gauge(f"vine_{key}", f"TaskVine's {key} (status('manager'))", value)


def _bound(b: float) -> str:
    return repr(float(b))


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` over HTTP, in a daemon thread.

    ``/healthz`` answers 200 while the manager loop keeps taking snapshots, and 503 once
    the last one is older than ``stale_after`` seconds (a loop stuck on a dead store, say),
    so a liveness probe restarts a wedged manager but not a busy one.
    """

    def __init__(self, host: str, port: int, *, stale_after: float = 60.0) -> None:
        self.stale_after = stale_after
        self._status: ManagerStatus | None = None
        self._updated = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(lambda: self._status))
        self._metrics_app = make_wsgi_app(self.registry)
        bind = "0.0.0.0" if host in ("", "*") else host
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
        self._server: WSGIServer = make_server(bind, port, self._app, server_class, _QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="kubevine-metrics",
            daemon=True,
            kwargs={"poll_interval": 0.2},
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def update(self, status: ManagerStatus) -> None:
        """A new snapshot (a reference swap: the HTTP thread never sees half of one)."""
        self._status = status
        self._updated = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self._updated
        if age > self.stale_after:
            return False, f"manager loop stalled: last snapshot {age:.0f}s ago\n"
        return True, "ok\n"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/livez", "/readyz"):
            ok, text = self.healthy()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [text.encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"kubevine manager: /metrics and /healthz live here\n"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
