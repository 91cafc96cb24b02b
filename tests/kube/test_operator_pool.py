"""A VineWorkflow's worker pool, end to end: the real operator, a real manager and Redis and
real workers run by the process kubelet, driven with the real kubectl.

`kubectl apply` a workflow with 0..3 workers; a client submits 300 tasks; the pool grows
0 → 3 and never beyond, and the operator's Prometheus /metrics shows desired workers jump
to 3 and actual ones catch up; every task completes on its first attempt; once the workers have
been idle past idleTimeoutSeconds they are drained and the pool is back at 0 without a
task killed; status, conditions and Events tell that story; `kubectl delete vw` removes
everything and leaves no finalizer.
"""

from __future__ import annotations

import pathlib
import time

from kubevine import Manager, Task
from kubevine.admin import Admin

from .emulator import KubeAPI
from .helpers import KUBECTL_BINARIES, kubectl, kubectl_json, wait_for
from .kubelet import Kubelet
from .vine import (
    apply,
    apply_crds,
    conditions,
    event_reasons,
    events,
    last_states,
    manager_address,
    most_pods_at_once,
    pool_spec,
    running_operator,
    token,
    vw,
    worker_pod_history,
    worker_pods,
    workflow,
)

OLD, NEW = (
    KUBECTL_BINARIES.get("kubectl-1.32", next(iter(KUBECTL_BINARIES.values()))),
    KUBECTL_BINARIES.get("kubectl-venv", next(iter(KUBECTL_BINARIES.values()))),
)
CHILD_KINDS = "pods,deployments,services,statefulsets,secrets,jobs"
WF = (("namespace", "default"), ("workflow", "pool"))


def test_pool_scales_0_to_3_runs_300_tasks_and_drains_back_to_0_then_delete_removes_all(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    apply_crds(kube_api, binary=OLD)
    with running_operator(kube_api, tmp_path / "operator.log") as operator:
        apply(kube_api, workflow("pool", pool_spec(min=0, max=3)), binary=OLD)
        address = manager_address(kube_api, "pool")
        assert worker_pods(kube_api, "pool") == []  # min 0: nothing runs while nothing is asked

        tasks = [Task(f"sleep 0.05; echo {i}", cores=1) for i in range(300)]
        with Manager(address, token=token(kube_api, "pool"), encrypt=True) as m:
            for task in tasks:
                m.submit(task)
            seen = []

            def converged() -> bool:
                samples = operator.metrics()
                seen.append((samples.get(("kubevine_operator_workers_desired", WF)),
                             samples.get(("kubevine_operator_workers_actual", WF))))  # fmt: skip
                return seen[-1] == (3, 3)

            wait_for(converged, timeout=60, interval=0.2, what="desired = actual = 3 in /metrics")
            # desired led, actual followed
            assert any(d == 3 and a is not None and a < 3 for d, a in seen), seen
            deadline = time.monotonic() + 90
            while not m.empty():
                assert time.monotonic() < deadline, (
                    f"tasks still running; operator log:\n{operator.log_tail()}"
                )
                m.wait(1)
        assert all(t.successful() for t in tasks), [t.error for t in tasks if not t.successful()][:3]
        assert {t.attempts for t in tasks} == {1}  # nothing retried, nothing killed and requeued
        assert {t.output.strip() for t in tasks} == {str(i) for i in range(300)}

        grown = vw(kube_api, "pool", binary=NEW)["status"]
        assert grown["lastScaling"]["from"] == 0 and grown["lastScaling"]["to"] == 3
        assert "capped at max 3" in grown["lastScaling"]["reason"]

        # idle past idleTimeoutSeconds (3 s): drained, exited, deleted
        wait_for(
            lambda: (
                worker_pods(kube_api, "pool") == []
                and vw(kube_api, "pool")["status"]["workers"]["connected"] == 0
            ),
            timeout=30,
            interval=0.3,
            what=f"the pool to drain back to 0; operator log:\n{operator.log_tail()}",
        )
        drained = operator.metrics()
        assert drained[("kubevine_operator_workers_desired", WF)] == 0
        assert drained[("kubevine_operator_workers_actual", WF)] == 0
        assert drained[("kubevine_operator_worker_pods_created_total", WF)] == 3
        assert drained[("kubevine_operator_workflows", (("phase", "Running"),))] == 1
        history = worker_pod_history(kube_api, "pool")
        assert most_pods_at_once(history) == 3
        assert len({name for _, name, _ in history}) == 3  # three pods in all: none replaced, none extra
        states = last_states(history)
        assert len(states) == 3, states
        for name, state in states.items():  # drained workers leave by themselves, exit 0
            assert "running" not in state, (name, state)
            assert state.get("terminated", {}).get("exitCode") == 0, (name, state)
        totals = Admin(address, token(kube_api, "pool"), encrypt=True).status().totals
        assert totals["done"] == 300 and totals.get("retried", 0) == 0 and totals.get("failed", 0) == 0

        # status, conditions and Events tell the story (read with the newer kubectl)
        body = vw(kube_api, "pool", binary=NEW)
        status = body["status"]
        assert status["phase"] == "Running"
        assert status["tasks"] == {"waiting": 0, "running": 0, "done": 300, "failed": 0}
        assert status["workers"] == {"desired": 0, "pending": 0, "connected": 0, "draining": 0}
        assert status["lastScaling"]["to"] == 0  # in one step or more, as workers went idle
        assert "idle" in status["lastScaling"]["reason"]
        assert status["observedGeneration"] == body["metadata"]["generation"]
        cond = conditions(body)
        assert cond["Valid"]["status"] == "True"
        assert cond["ManagerReady"]["status"] == "True"
        assert cond["WorkersReady"]["status"] == "True"
        reasons = event_reasons(kube_api, "pool")
        assert {"Created", "ManagerAvailable", "ScaledUp", "ScaledDown"} <= set(reasons), reasons
        scaled_up = [e for e in events(kube_api, "pool") if e["reason"] == "ScaledUp"]
        assert "300 waiting" in scaled_up[0]["message"] and "0→3" in scaled_up[0]["message"]
        table = kubectl(kube_api, "get", "vw", "pool", binary=NEW).stdout
        assert "Running" in table and "300" in table
        described = kubectl(kube_api, "describe", "vw", "pool", binary=NEW).stdout
        assert "ScaledDown" in described and "Last Scaling" in described

        kubectl(kube_api, "delete", "vw", "pool", "--timeout=30s", binary=NEW)
        assert kubectl(kube_api, "get", "vw", "pool", binary=NEW, check=False).returncode != 0
        wait_for(
            lambda: not [k for k in operator.metrics() if ("workflow", "pool") in k[1]],
            timeout=10,
            interval=0.2,
            what="the deleted workflow's series to leave /metrics",
        )
        wait_for(
            lambda: (
                kubectl_json(kube_api, "get", CHILD_KINDS, "-l", "kubevine.io/workflow=pool")["items"] == []
            ),
            timeout=30,
            interval=0.3,
            what="every child of the workflow to be garbage-collected",
        )
