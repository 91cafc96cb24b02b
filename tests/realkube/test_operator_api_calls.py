"""How often the operator calls the API server (issue 17): with N VineWorkflows at rest and
the chart's default pace (a step every 5 s per workflow), it reads nothing per step — the
children come from watches — and writes only what changed. Counted from the API server's
audit log over a window; the numbers are printed (`-s`) and written to
`<cluster state>/api-calls.json`. N is `KUBEVINE_SCALE_WORKFLOWS` (default 3), the window
`KUBEVINE_SCALE_WINDOW_SECONDS` (default 15: three steps of every workflow)."""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

from .controlplane import Cluster
from .helpers import Kube, wait_for
from .vine import Release, Workflows, external_store, operator_requests, pool_spec, redis_server, workflow

N = int(os.environ.get("KUBEVINE_SCALE_WORKFLOWS", "3"))  # 5 and 10 measured 0 calls/min at rest too
WINDOW = float(os.environ.get("KUBEVINE_SCALE_WINDOW_SECONDS", "15"))
#: What one step of one workflow cost before (a list of worker pods, a list of manager pods,
#: a GET of the Deployment, and a status PATCH every step), for the comparison printed.
POLLING_CALLS_PER_STEP = 4


def test_n_idle_workflows_cost_the_api_server_a_few_calls_a_minute(
    kubevine: Release, kube_factory: Any, real_cluster: Cluster
) -> None:
    kubevine.scale(0)
    home: Kube = kube_factory(psa="privileged")
    defaults = {
        "operator": {
            "autoscaler": {"intervalSeconds": 5, "stabilizationSeconds": 60, "statsMaxAgeSeconds": 30},
            "resyncSeconds": 300,
        },
        # No worker runs here (min 0, nothing submitted): the session's keepers are enough.
        "nodeCache": {"keeper": {"enabled": False}},
    }
    release = Release(real_cluster, home.ns, name="scale", values=defaults)
    try:
        release.install()
        release.wait_ready(keepers=0)
        wf = Workflows(home)
        wf.apply(*redis_server())
        wait_for(lambda: home.running_pods("app=redis", 1), timeout=60, what="the shared Redis")
        small = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
        for i in range(N):
            spec = pool_spec()
            spec["stateStore"] = external_store(home.ns)
            spec["manager"]["resources"] = small
            wf.apply(workflow(f"wf{i:03d}", spec))

        def all_running() -> bool:
            """Every workflow is Running; if not, an AssertionError says where each one is."""
            items = home.get(f"/apis/kubevine.io/v1alpha1/namespaces/{home.ns}/vineworkflows")["items"]
            phases = {w["metadata"]["name"]: (w.get("status") or {}).get("phase") for w in items}
            if len(items) == N and all(p == "Running" for p in phases.values()):
                return True
            pods = {p["metadata"]["name"]: p["status"].get("phase") for p in home.pods()}
            raise AssertionError(f"workflows {phases}; pods {pods}")

        # Generous: N ReplicaSets at once are synced by the real controller-manager, which
        # requeues (with a growing back-off) a sync its informer has not caught up with — on a
        # busy machine some manager pods came ~2 minutes after their Deployment.
        wait_for(all_running, timeout=90 + 15 * N, interval=1, what=f"{N} workflows Running")
        # Settle: the last status changes of the start-up are written.
        ready = time.time()

        def quiet() -> bool:
            """The start-up is over: the operator has called nothing for 3 s."""
            recent = operator_requests(real_cluster, release.user, ready - 60)
            return bool(recent) and time.time() - max(c["received"] for c in recent) > 3

        wait_for(quiet, timeout=60, interval=1, what="the operator's start-up calls to end")
        start = time.time()
        steps_before = _steps(release)

        not_running: list[float] = []  # when a look found a workflow no longer Running

        def window_over() -> bool:
            """The measurement window has passed (every workflow looked at every 5 s)."""
            try:
                all_running()
            except AssertionError:
                not_running.append(time.time())
            return time.time() - start >= WINDOW

        wait_for(window_over, timeout=WINDOW + 60, interval=5, what="the measurement window")
        assert not not_running, f"a workflow left Running during the window at {not_running}"
        calls = operator_requests(real_cluster, release.user, start, start + WINDOW)
        steps_after = _steps(release)
        # Released by the operator that ran them, before it goes (the session's would take them).
        home.kubectl("delete", "vineworkflows", "--all", "--timeout=60s")
    finally:
        release.uninstall()
        kubevine.scale(1)

    by_kind = collections.Counter(f"{c['verb']} {c['what']}" for c in calls)
    per_minute = len(calls) * 60 / WINDOW
    polling = N * (60 / 5) * POLLING_CALLS_PER_STEP
    steps = steps_after[1] - steps_before[1]
    step_ms = 1000 * (steps_after[0] - steps_before[0]) / max(1, steps)
    report = {
        "workflows": N,
        "window_seconds": WINDOW,
        "calls_per_minute": per_minute,
        "by_kind": dict(by_kind.most_common()),
        "polling_design_calls_per_minute": polling,
        "autoscale_steps": steps,
        "mean_step_ms": round(step_ms, 2),
    }
    (real_cluster.state_dir / "api-calls.json").write_text(json.dumps(report, indent=1))
    print(f"\n{N} idle workflows: {per_minute:.0f} API calls/min by the operator ({dict(by_kind)}); "
          f"polling every step would be {polling:.0f}/min; {steps} steps, {step_ms:.1f} ms each")  # fmt: skip
    # the workflows are looked at on the chart's pace (a step each 5 s), with no call per step
    # (two steps a workflow short of it allowed: a busy machine delays timers)
    assert steps >= N * max(1, WINDOW / 5 - 2), report
    # At rest: watches, a Secret read per workflow every resync (300 s), nothing per step.
    assert per_minute <= 10 + N * 60 / 300 + N * 0.2, report


def _steps(release: Release) -> tuple[float, float]:
    """The operator's autoscale steps so far: (seconds spent in them, how many)."""
    m = release.metrics()
    name = "kubevine_operator_autoscale_step_seconds"
    return m.get((f"{name}_sum", ()), 0.0), m.get((f"{name}_count", ()), 0.0)
