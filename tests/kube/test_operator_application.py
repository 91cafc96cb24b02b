"""Application mode, end to end: the workflow runs a Job against its own manager, and the
Job's outcome is the workflow's.

Workflows run side by side under one operator: one whose script submits tasks that all
succeed (it ends Succeeded, its workers scale to zero, and it is deleted
ttlSecondsAfterFinished later), one whose script fails (it ends Failed and stays), and
`examples/kubernetes/workflow-app.yaml` exactly as shipped.
"""

from __future__ import annotations

import pathlib

from .emulator import KubeAPI
from .helpers import kubectl, kubectl_json, wait_for
from .kubelet import Kubelet
from .vine import (
    REPO,
    apply,
    apply_crds,
    conditions,
    events,
    pool_spec,
    running_operator,
    worker_pods,
    workflow,
)

SUCCEEDING = """
import os
from kubevine import Manager, Task
with Manager(os.environ["KUBEVINE_MANAGER"]) as m:  # the token comes from KUBEVINE_TOKEN
    tasks = [Task(f"echo {i}", cores=1) for i in range(40)]
    for t in tasks:
        m.submit(t)
    while not m.empty():
        m.wait(5)
bad = [t.id for t in tasks if not t.successful()]
assert not bad, bad
print("all 40 tasks succeeded")
"""

FAILING = """
import os
from kubevine import Manager, Task
with Manager(os.environ["KUBEVINE_MANAGER"]) as m:
    task = Task("echo about to fail; exit 7", cores=1)
    m.submit(task)
    while not m.empty():
        m.wait(5)
raise SystemExit(f"task {task.id} failed with exit code {task.exit_code}")
"""


def app_spec(script: str, **extra: object) -> dict[str, object]:
    spec = pool_spec(min=0, max=2)
    spec["application"] = {"command": ["python", "-c"], "args": [script]}
    spec.update(extra)
    return spec


def test_application_job_outcome_decides_succeeded_or_failed_then_ttl_deletes(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    apply_crds(kube_api)
    with running_operator(kube_api, tmp_path / "operator.log") as operator:
        apply(kube_api, workflow("app-ok", app_spec(SUCCEEDING, ttlSecondsAfterFinished=4)))
        bad_spec = app_spec(FAILING)
        bad_spec["application"]["backoffLimit"] = 0  # type: ignore[index]
        apply(kube_api, workflow("app-bad", bad_spec))
        kubectl(kube_api, "apply", "-f", str(REPO / "examples/kubernetes/workflow-app.yaml"))  # never rots

        def phase(name: str) -> str | None:
            result = kubectl(kube_api, "get", "vw", name, "-o", "jsonpath={.status.phase}", check=False)
            return result.stdout if result.returncode == 0 else None

        wait_for(
            lambda: phase("app-ok") == "Succeeded",
            timeout=60,
            interval=0.2,
            what=f"app-ok to succeed; operator log:\n{operator.log_tail()}",
        )
        ok = kubectl_json(kube_api, "get", "vw", "app-ok")
        assert conditions(ok)["Succeeded"]["status"] == "True"
        assert conditions(ok)["Failed"]["status"] == "False"
        assert "all 40 tasks succeeded" in kubectl(kube_api, "logs", "job/app-ok-app").stdout
        assert ok["status"]["tasks"]["done"] == 40

        wait_for(lambda: phase("app-bad") == "Failed", timeout=60, interval=0.2, what="app-bad to fail")
        bad = kubectl_json(kube_api, "get", "vw", "app-bad")
        assert conditions(bad)["Failed"]["status"] == "True"
        assert conditions(bad)["Succeeded"]["status"] == "False"
        assert "failed with exit code 7" in kubectl(kube_api, "logs", "job/app-bad-app").stdout
        warnings = [e for e in events(kube_api, "app-bad") if e["type"] == "Warning"]
        assert sorted(e["reason"] for e in warnings) == ["ApplicationFailed", "ApplicationPodFailed"]

        # finished: the workers scale to zero; the manager stays for inspection until the TTL
        wait_for(
            lambda: worker_pods(kube_api, "app-bad") == [], timeout=20, what="app-bad's workers to leave"
        )
        assert phase("app-bad") == "Failed"  # no TTL: kept

        wait_for(lambda: phase("met-histogram") == "Succeeded", timeout=60, interval=0.3, what="the example")
        assert "all 100 tasks succeeded" in kubectl(kube_api, "logs", "job/met-histogram-app").stdout

        # ttlSecondsAfterFinished=4: the whole workflow goes, children by owner references
        wait_for(lambda: phase("app-ok") is None, timeout=30, interval=0.2, what="app-ok to be deleted")
        assert "ApplicationSucceeded" in [e["reason"] for e in events(kube_api, "app-ok")]
        assert "Expired" in [e["reason"] for e in events(kube_api, "app-ok")]
        wait_for(
            lambda: (
                kubectl_json(kube_api, "get", "pods,jobs,deployments", "-l", "kubevine.io/workflow=app-ok")[
                    "items"
                ]
                == []
            ),
            timeout=20,
            what="app-ok's children to be garbage-collected",
        )
