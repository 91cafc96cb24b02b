"""Failures a platform engineer must see on the VineWorkflow itself, reported by the real API
server, scheduler and kubelets: an image that cannot be pulled, a worker no node can take, a
manager that crashes again and again, workers killed by the kernel for their memory, a worker
pod Pod Security refuses — each as a status problem, the Healthy condition and one Warning
Event; failed worker pods kept as evidence and new ones created (or asked for) less and less
often."""

from __future__ import annotations

import datetime
import itertools
import time
from typing import Any

from .controlplane import Cluster
from .helpers import Kube, wait_for
from .vine import FAST_VALUES, Release, Workflows, operator_requests, pool_spec, workflow


def backoff(failures_before: int) -> float:
    """The chart's back-off here (FAST_VALUES: 2 s doubling, at most 16 s) after the n-th failure."""
    failures = FAST_VALUES["operator"]["failures"]
    return float(min(failures["backoffMaxSeconds"], failures["backoffSeconds"] * 2**failures_before))


def problems(wf: Workflows, name: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(p["component"], p["reason"]): p for p in wf.status(name).get("problems") or []}


def created_at(cluster: Cluster, user: str, namespace: str, prefix: str, since: float) -> list[float]:
    """When the operator created pods named `prefix...` (audit log, oldest first)."""
    times = []
    for event in cluster.audit_events(since):
        ref = event.get("objectRef") or {}
        if (
            event.get("user", {}).get("username") == user
            and event.get("verb") == "create"
            and ref.get("resource") == "pods"
            and ref.get("namespace") == namespace
            and str(ref.get("name", "")).startswith(prefix)
        ):
            stamp = str(event["requestReceivedTimestamp"]).replace("Z", "+00:00")
            times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return sorted(times)


def test_image_pull_back_off_unschedulable_crash_loop_oom_killed_and_refused_workers_are_reported(
    kubevine: Release, kube: Kube, kube_factory: Any, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    started = time.time()
    # Pod Security refuses the node cache (a hostPath) in a `restricted` namespace: the refusal
    # is the only evidence (there is no pod), so it is the problem, and the operator asks again
    # less and less often. (In the same test, so that its back-off runs beside the others'.)
    restricted: Kube = kube_factory(psa="restricted")
    psa = Workflows(restricted)
    psa.apply(workflow("psa", pool_spec(min=1)))
    unpullable = pool_spec()
    unpullable["image"] = "registry.invalid/analysis:missing"  # no runtime can pull it
    too_big = pool_spec(min=1, cores=64)  # no node has 64 CPUs
    crashing = pool_spec()
    # A URL the manager cannot use (a typo): it exits at once, again and again. (A Redis that
    # does not answer is waited for, up to the outage grace, before the manager gives up.)
    crashing["stateStore"] = {"redisUrl": "redis://127.0.0.1:1/0?socket_timeout=never"}
    starving = pool_spec(min=1, memory=24)  # the kernel kills a worker in 24 MiB
    wf.apply(
        workflow("nopull", unpullable),
        workflow("toobig", too_big),
        workflow("crash", crashing),
        workflow("oom", starving),
    )

    wait_for(
        lambda: ("manager", "ImagePullBackOff") in problems(wf, "nopull"), timeout=60, what="ImagePullBackOff"
    )
    nopull = wf.status("nopull")
    assert nopull["phase"] == "Pending"
    assert (
        "ImagePullBackOff" in nopull["message"] and "registry.invalid/analysis:missing" in nopull["message"]
    )
    assert wf.conditions("nopull")["Healthy"]["status"] == "False"
    assert wf.conditions("nopull")["Healthy"]["reason"] == "ImagePullBackOff"

    wait_for(lambda: ("worker", "Unschedulable") in problems(wf, "toobig"), timeout=60, what="Unschedulable")
    assert "Insufficient cpu" in problems(wf, "toobig")[("worker", "Unschedulable")]["message"]

    wait_for(
        lambda: ("manager", "CrashLoopBackOff") in problems(wf, "crash"), timeout=90, what="CrashLoopBackOff"
    )
    assert "exit code" in problems(wf, "crash")[("manager", "CrashLoopBackOff")]["message"]

    wait_for(lambda: ("worker", "WorkerPodFailed") in problems(wf, "oom"), timeout=90, what="a failed worker")
    assert "OOMKilled (exit code 137)" in problems(wf, "oom")[("worker", "WorkerPodFailed")]["message"]
    # Kept as evidence (kubectl describe / logs still find them), and each failure makes the
    # next pod wait longer: 2 s, 4 s, 8 s... (the chart's backoffSeconds here is 2).
    wait_for(
        lambda: len(wf.workers("oom", live=False)) >= 4, timeout=120, interval=0.5, what="four failed workers"
    )
    failed = [p for p in wf.workers("oom", live=False) if p["status"].get("phase") == "Failed"]
    assert len(failed) >= 3
    ends = sorted(
        datetime.datetime.fromisoformat(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"].replace("Z", "+00:00")
        ).timestamp()
        for p in failed
    )
    times = created_at(real_cluster, kubevine.user, kube.ns, "oom-worker-", started)
    # From the n-th failure to the (n+1)-th pod: 2 s, 4 s, 8 s... (finishedAt has whole seconds)
    waits = [times[i + 1] - end for i, end in enumerate(ends) if i + 1 < len(times)]
    # What the operator promises is a floor: never sooner than the back-off after a failure
    # (a busy machine only adds to it). finishedAt is rounded down, so a wait reads longer.
    assert len(waits) >= 3, (waits, ends, times)
    assert all(wait >= backoff(i) - 0.5 for i, wait in enumerate(waits)), (waits, ends, times)
    assert waits[2] > waits[0] + 2, (waits, ends, times)

    for name, reason in (
        ("nopull", "ImagePullBackOff"),
        ("toobig", "Unschedulable"),
        ("crash", "CrashLoopBackOff"),
        ("oom", "WorkerPodFailed"),
    ):
        warnings = [e for e in wf.events(name) if e["type"] == "Warning"]
        assert reason in {e["reason"] for e in warnings}, (
            name,
            [(e["reason"], e["message"]) for e in warnings],
        )
        # one Event per problem, not one per step: kubectl describe stays readable
        assert sum(1 for e in warnings if e["reason"] == reason) <= 2, name
    # None of this was a 403 or a retry storm against the API server — but the refused pods.
    calls = operator_requests(real_cluster, kubevine.user, started)
    refused = [c for c in calls if c["code"] == 403]
    assert all(
        (c["verb"], c["resource"], c["namespace"]) == ("create", "pods", restricted.ns) for c in refused
    ), refused[:3]

    psa.wait_phase("psa", "Running")  # the manager and the Redis pass `restricted`
    wait_for(lambda: ("worker", "PodCreateForbidden") in problems(psa, "psa"), timeout=30, what="the refusal")
    problem = problems(psa, "psa")[("worker", "PodCreateForbidden")]
    assert (
        'violates PodSecurity "restricted:latest"' in problem["message"] and "hostPath" in problem["message"]
    )
    wait_for(lambda: "PodCreateForbidden" in psa.reasons("psa"), timeout=15, what="the event")
    # Asked again less and less often (2 s, 4 s, 8 s, ...), not once per 1 s step.
    wait_for(
        lambda: len(created_at(real_cluster, kubevine.user, restricted.ns, "psa-worker-", started)) >= 4,
        timeout=60,
        interval=0.5,
        what="four attempts",
    )
    times = created_at(real_cluster, kubevine.user, restricted.ns, "psa-worker-", started)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= backoff(i) - 0.5 for i, gap in enumerate(gaps[:3])), gaps
    assert gaps[2] > gaps[0] + 2, gaps
    refused = [
        c
        for c in operator_requests(real_cluster, kubevine.user, started)
        if (c["verb"], c["resource"], c["code"], c["namespace"]) == ("create", "pods", 403, restricted.ns)
    ]
    assert len(refused) >= len(times)  # (more may have come since `times` was read)

    # Without the node cache the workers pass `restricted` too, and the pool runs.
    psa.apply(workflow("psa", pool_spec(min=1, nodeCache={"enabled": False})))
    wait_for(lambda: psa.status("psa").get("workers", {}).get("connected") == 1, timeout=60, what="a worker")
    wait_for(lambda: not problems(psa, "psa"), timeout=30, what="the problem to clear")
    wait_for(lambda: "Recovered" in psa.reasons("psa"), timeout=15, what="a Recovered event")
