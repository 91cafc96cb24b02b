"""``/metrics`` and ``/healthz`` on a real manager, scraped while a run goes on."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from kubevine import LocalCluster, Manager, Task

from .helpers import http_get, metrics_address


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "workflow"))
            out[(s.name, labels)] = s.value
    return out


DONE = ("kubevine_tasks_finished_total", (("state", "done"),))


def test_the_tasks_done_counter_rises_to_the_number_of_tasks(
    observed_cluster: Callable[..., LocalCluster],
) -> None:
    n = 120
    c = observed_cluster(workers=2, cores=1)
    url = f"http://{metrics_address(c)}/metrics"
    seen: list[float] = []
    with Manager(c.address, token=c.token) as m:
        for i in range(n):
            m.submit(Task(f"sleep 0.01; echo {i}"))
        got = 0
        deadline = time.monotonic() + 60
        while got < n:
            assert time.monotonic() < deadline, f"only {got} of {n} tasks came back"
            if m.wait(0.05) is not None:
                got += 1
                while m.wait(0) is not None:
                    got += 1
            status, body = http_get(url)
            assert status == 200
            seen.append(_samples(body).get(DONE, 0.0))
        deadline = time.monotonic() + 10  # the next snapshot counts the last ones
        while seen[-1] < n:
            assert time.monotonic() < deadline, f"done counter stuck at {seen[-1]}"
            seen.append(_samples(http_get(url)[1]).get(DONE, 0.0))
    assert seen == sorted(seen), "a counter never goes down"
    assert seen[-1] == n
    assert any(0 < v < n for v in seen), f"never saw the run in progress: {sorted(set(seen))}"


def test_metrics_describe_states_workers_wall_times_and_transfers(
    observed_cluster: Callable[..., LocalCluster],
) -> None:
    c = observed_cluster(workers=2, cores=1)
    url = f"http://{metrics_address(c)}/metrics"
    with Manager(c.address, token=c.token) as m:
        data = m.declare_buffer(b"x" * 4096)
        for _ in range(20):
            t = Task("cat in.txt > /dev/null")
            t.add_input(data, "in.txt")
            m.submit(t)
        assert len(list(m.results(timeout=30))) == 20
        deadline = time.monotonic() + 10
        while True:
            s = _samples(http_get(url)[1])
            if s.get(("kubevine_task_wall_seconds_count", ())) == 20:
                break
            assert time.monotonic() < deadline, "the wall-time histogram never counted 20 attempts"
            time.sleep(0.05)
    assert s[("kubevine_workers_connected", ())] == 2
    assert s[("kubevine_cores_total", ())] == 2
    assert s[("kubevine_tasks_submitted_total", ())] == 20
    assert s[("kubevine_tasks_dispatched_total", ())] == 20
    assert s[("kubevine_tasks_completed_total", ())] == 20
    for state in ("waiting", "ready", "dispatched", "running", "retrying", "failed", "cancelled"):
        assert ("kubevine_tasks", (("state", state),)) in s  # every state is there, 0 or not
    assert s[("kubevine_task_wall_seconds_bucket", (("le", "+Inf"),))] == 20
    assert 0 < s[("kubevine_task_wall_seconds_sum", ())] < 20
    # the input reached each of the two workers once (from the manager, or the second time
    # from the worker that had it)
    sources = ("manager", "peer", "url")
    assert sum(s[("kubevine_transfers_total", (("source", k),))] for k in sources) == 2
    assert sum(s[("kubevine_transfer_bytes_total", (("source", k),))] for k in sources) == 2 * 4096
    assert s[("kubevine_transfers_total", (("source", "manager"),))] >= 1
    # each task's input was a hit or a miss at dispatch; a miss also when its transfer to that
    # worker was still under way for an earlier task
    hits, misses = s[("kubevine_cache_hits_total", ())], s[("kubevine_cache_misses_total", ())]
    assert hits + misses == 20 and misses >= 2 and hits > 0


def test_healthz_answers_ok_and_other_paths_are_not_found(
    observed_cluster: Callable[..., LocalCluster],
) -> None:
    c = observed_cluster(workers=0)
    base = f"http://{metrics_address(c)}"
    assert http_get(f"{base}/healthz") == (200, "ok\n")
    status, _ = http_get(f"{base}/nothing-here")
    assert status == 404
