"""Benchmark: how the operator's autoscaler serves a burst — 1,000 tasks on a pool at 0.

Runs the real operator (`kubevine operator`, a subprocess) against the Kubernetes API
emulator, with the process kubelet running the manager, its Redis and every worker pod as
local processes (tests/kube; see docs/dev/kube-harness.md). A VineWorkflow with workers
min 0, max 4 (one core each) is applied; once its manager is ready, a client submits
1,000 one-core tasks of `--task-seconds` each, and the script reports:

  manager ready        kubectl apply → the manager pod Ready
  first task done      submission → the first result
  all done             submission → the last result
  back to min          the last result → no worker pod left (idle timeout, the
                       stabilisation window and the drain all count here)
  max pods             most worker pods at once (must not exceed max)
  decisions            scaling decisions that changed the pool (status.lastScaling)
  reversals in window  consecutive decisions in opposite directions less than
                       stabilizationSeconds apart (target 0: the pool does not flap)

Not a test: nothing fails because the machine is slow. The operator runs with the
chart's defaults (a step every 5 s, a 60 s stabilisation window) unless told otherwise.

    python bench/autoscale.py [--tasks 1000] [--max 4] [--task-seconds 0.1]
                              [--interval 5] [--stabilization 60] [--idle-timeout 10]

`--real-cluster` (as root) runs it on the real control plane instead (tests/realkube): a
cluster of its own with `--nodes` 3 process-kubelet nodes whose links are limited to
`--bandwidth` (1gbit) by tc, the chart installed with helm (the operator as a pod, with the
pace given here), the real scheduler placing the workers; pods at once are counted from the
API server's audit log, decisions from the workflow's Events.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import sys
import tempfile
import time
from datetime import datetime
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubevine import Manager, Task  # noqa: E402
from tests.kube.emulator import EmulatorThread, KubeAPI  # noqa: E402
from tests.kube.helpers import wait_for  # noqa: E402
from tests.kube.kubelet import Kubelet, KubeletThread  # noqa: E402
from tests.kube.vine import (  # noqa: E402
    apply,
    apply_crds,
    manager_address,
    most_pods_at_once,
    pool_spec,
    running_operator,
    token,
    worker_pod_history,
    worker_pods,
    workflow,
)

NAME = "burst"


def scaling_history(api: KubeAPI) -> list[tuple[float, int, int]]:
    """(time, from, to) of every distinct `status.lastScaling` the workflow recorded."""

    def read(store: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        for event in store.log:
            if event.key == ("kubevine.io", "vineworkflows") and event.obj["metadata"]["name"] == NAME:
                record = (event.obj.get("status") or {}).get("lastScaling")
                if record and (not seen or seen[-1] != record):
                    seen.append(json.loads(json.dumps(record)))
        return seen

    records: list[dict[str, Any]] = api.call(read)
    return [(datetime.fromisoformat(r["time"]).timestamp(), int(r["from"]), int(r["to"])) for r in records]


def reversals(history: list[tuple[float, int, int]], window: float) -> int:
    """Consecutive decisions in opposite directions less than `window` seconds apart."""
    count = 0
    for (t0, a0, b0), (t1, a1, b1) in itertools.pairwise(history):
        if (b0 - a0) * (b1 - a1) < 0 and t1 - t0 < window:
            count += 1
    return count


def run(args: argparse.Namespace, root: pathlib.Path) -> dict[str, Any]:
    emulator = EmulatorThread(root / "api")
    api = emulator.start()
    kubelet_thread = KubeletThread(lambda: Kubelet(api.url, root / "kubelet", ["node-a", "node-b"]))
    kubelet_thread.start()
    settings = {
        "KUBEVINE_OPERATOR_SCALE_INTERVAL_SECONDS": str(args.interval),
        "KUBEVINE_OPERATOR_STABILIZATION_SECONDS": str(args.stabilization),
        "KUBEVINE_OPERATOR_STATS_MAX_AGE_SECONDS": "30",
    }
    try:
        apply_crds(api)
        with running_operator(api, root / "operator.log", settings=settings):
            t_apply = time.monotonic()
            spec = pool_spec(min=0, max=args.max, idleTimeoutSeconds=args.idle_timeout)
            apply(api, workflow(NAME, spec))
            address = manager_address(api, NAME, timeout=60)
            ready = time.monotonic() - t_apply
            tasks = [Task(f"sleep {args.task_seconds}", cores=1) for _ in range(args.tasks)]
            first = None
            with Manager(address, token=token(api, NAME), encrypt=True) as m:
                t0 = time.monotonic()
                for task in tasks:
                    m.submit(task)
                while not m.empty():
                    if m.wait(1) is not None and first is None:
                        first = time.monotonic() - t0
                done = time.monotonic()
            failed = sum(1 for t in tasks if not t.successful())
            wait_for(
                lambda: worker_pods(api, NAME) == [],
                timeout=args.stabilization + args.idle_timeout + 120,
                interval=0.2,
                what="the pool back at min",
            )
            back = time.monotonic() - done
            history = scaling_history(api)
            return {
                "manager_ready_s": ready,
                "first_task_done_s": first,
                "all_done_s": done - t0,
                "back_to_min_s": back,
                "max_pods": most_pods_at_once(worker_pod_history(api, NAME)),
                "decisions": [f"{a}→{b}" for _, a, b in history],
                "reversals_in_window": reversals(history, args.stabilization),
                "failed_tasks": failed,
                "retried_tasks": sum(1 for t in tasks if t.attempts > 1),
            }
    finally:
        kubelet_thread.stop()
        emulator.stop()


def run_real(args: argparse.Namespace) -> dict[str, Any]:
    """The same burst on the real control plane (see the module doc)."""
    import re

    from tests.realkube.helpers import wait_for as wait
    from tests.realkube.vine import Workflows, cluster_with_chart, pool_spec, privileged_namespace, workflow

    pace = {
        "operator": {
            "autoscaler": {
                "intervalSeconds": args.interval,
                "stabilizationSeconds": args.stabilization,
                "statsMaxAgeSeconds": 30,
            }
        }
    }
    with cluster_with_chart("bench-autoscale", "kva", 92, args.nodes, args.bandwidth, pace) as (
        cluster,
        release,
    ):
        kube = privileged_namespace(cluster, "bench")
        wf = Workflows(kube)
        t_apply = time.monotonic()
        since = time.time()
        spec = pool_spec(min=0, max=args.max, idleTimeoutSeconds=args.idle_timeout, memory=512, disk=0)
        wf.apply(workflow(NAME, spec))
        address = wf.manager_address(NAME)
        ready = time.monotonic() - t_apply
        tasks = [Task(f"sleep {args.task_seconds}", cores=1) for _ in range(args.tasks)]
        first = None
        with Manager(address, token=wf.token(NAME), encrypt=True) as m:
            t0 = time.monotonic()
            for task in tasks:
                m.submit(task)
            while not m.empty():
                if m.wait(1) is not None and first is None:
                    first = time.monotonic() - t0
            done = time.monotonic()
        wait(lambda: wf.workers(NAME) == [], timeout=args.stabilization + args.idle_timeout + 120,
             interval=0.2, what="the pool back at min")  # fmt: skip
        back = time.monotonic() - done
        # Pods at once: the operator's creates and deletes of worker pods, in order.
        level, most = 0, 0
        events = sorted(cluster.audit_events(since), key=lambda e: str(e["requestReceivedTimestamp"]))
        for e in events:
            ref = e.get("objectRef") or {}
            if e.get("user", {}).get("username") != release.user or ref.get("resource") != "pods":
                continue
            if not str(ref.get("name", "")).startswith(f"{NAME}-worker-") or ref.get("subresource"):
                continue
            code = (e.get("responseStatus") or {}).get("code")
            if e.get("verb") == "create" and code == 201:
                level += 1
            elif e.get("verb") == "delete" and code == 200:
                level -= 1
            most = max(most, level)
        history = []
        for e in wf.events(NAME):
            if e["reason"] in ("ScaledUp", "ScaledDown"):
                found = re.search(r"(\d+)→(\d+)", e["message"])
                stamp = e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
                if found and stamp:
                    when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
                    history.append((when, int(found.group(1)), int(found.group(2))))
        history.sort()
        return {
            "manager_ready_s": ready,
            "first_task_done_s": first,
            "all_done_s": done - t0,
            "back_to_min_s": back,
            "max_pods": most,
            "decisions": [f"{a}→{b}" for _, a, b in history],
            "reversals_in_window": reversals(history, args.stabilization),
            "failed_tasks": sum(1 for t in tasks if not t.successful()),
            "retried_tasks": sum(1 for t in tasks if t.attempts > 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--max", type=int, default=4)
    parser.add_argument("--task-seconds", type=float, default=0.1)
    parser.add_argument("--interval", type=float, default=5.0, help="autoscaler step (s)")
    parser.add_argument("--stabilization", type=float, default=60.0, help="stabilisation window (s)")
    parser.add_argument("--idle-timeout", type=int, default=10, help="workers.idleTimeoutSeconds")
    parser.add_argument("--real-cluster", action="store_true", help="on the real control plane (root)")
    parser.add_argument("--nodes", type=int, default=3, help="--real-cluster: nodes")
    parser.add_argument("--bandwidth", default="1gbit", help="--real-cluster: each node's link, each way")
    args = parser.parse_args()
    if args.real_cluster:
        result = run_real(args)
    else:
        with tempfile.TemporaryDirectory(prefix="kubevine-bench-") as tmp:
            result = run(args, pathlib.Path(tmp))
    where = (
        f"real control plane, {args.nodes} nodes, links {args.bandwidth}"
        if args.real_cluster
        else "API emulator, process kubelet"
    )
    print(
        f"autoscale ({where}): {args.tasks} tasks x {args.task_seconds:g}s, pool 0..{args.max} x 1 core, "
        f"step {args.interval:g}s, stabilisation {args.stabilization:g}s, idle timeout {args.idle_timeout}s"
    )
    print(f"  manager ready        {result['manager_ready_s']:7.1f} s")
    print(f"  first task done      {result['first_task_done_s']:7.1f} s")
    print(f"  all done             {result['all_done_s']:7.1f} s")
    print(f"  back to min          {result['back_to_min_s']:7.1f} s")
    print(f"  max pods             {result['max_pods']:7d}   (max {args.max})")
    print(f"  decisions            {', '.join(result['decisions'])}")
    print(f"  reversals in window  {result['reversals_in_window']:7d}   (target 0)")
    print(f"  failed / retried     {result['failed_tasks']} / {result['retried_tasks']}")


if __name__ == "__main__":
    main()
