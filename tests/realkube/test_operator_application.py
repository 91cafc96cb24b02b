"""Application mode on a real first run: the manager may take long to come up (an image pull, a
node to free), so the application Job is created only once the manager is ready — as long as
`startTimeoutSeconds` allows; past it the workflow fails, saying why. The Job has resources
and the workflow's backoffLimit; when the real Job controller gives up on it, the workflow is
Failed, its workers leave, and it stays for inspection."""

from __future__ import annotations

from .controlplane import Cluster
from .helpers import Kube, wait_for
from .vine import Release, Workflows, pool_spec, workflow

SCRIPT = """
import os
from kubevine import Manager, Task
with Manager(os.environ["KUBEVINE_MANAGER"]) as m:
    tasks = [Task(f"echo {i}", cores=1) for i in range(10)]
    for t in tasks:
        m.submit(t)
    while not m.empty():
        m.wait(5)
assert all(t.successful() for t in tasks)
print("application done")
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
LABEL = "kubevine.test/manager-here"


def app_spec(label: str = LABEL, **application: object) -> dict[str, object]:
    spec = pool_spec(max=2)
    # The manager can go only where no node is yet: it waits Pending, Unschedulable.
    spec["manager"]["nodeSelector"] = {label: "yes"}  # type: ignore[index]
    spec["application"] = {"command": ["python", "-c"], "args": [SCRIPT], **application}
    return spec


def job(kube: Kube, name: str) -> dict[str, object] | None:
    found: dict[str, object] | None = kube.get(f"/apis/batch/v1/namespaces/{kube.ns}/jobs/{name}-app")
    return found


def test_the_application_starts_once_the_manager_is_ready_or_fails_after_its_start_timeout(
    kubevine: Release, kube: Kube, real_cluster: Cluster
) -> None:
    wf = Workflows(kube)
    never_spec = app_spec("kubevine.test/nowhere", startTimeoutSeconds=30)
    bad_spec = pool_spec(max=2)
    bad_spec["application"] = {"command": ["python", "-c"], "args": [FAILING], "backoffLimit": 0}
    wf.apply(workflow("late", app_spec()), workflow("never", never_spec), workflow("bad", bad_spec))
    wait_for(lambda: any(p["reason"] == "Unschedulable" for p in wf.status("late").get("problems") or []),
             timeout=60, what="the manager to be reported Unschedulable")  # fmt: skip
    assert job(kube, "late") is None  # the manager is not ready: no application yet
    assert wf.phase("late") == "Pending"

    node = "node-b"
    kube.kubectl("label", "node", node, f"{LABEL}=yes", "--overwrite")
    try:
        wait_for(lambda: job(kube, "late") is not None, timeout=60, what="the Job once the manager is ready")
        wait_for(
            lambda: wf.conditions("late")["ManagerReady"]["status"] == "True", timeout=10, what="ManagerReady"
        )
        created = job(kube, "late")
        assert created is not None
        spec = created["spec"]  # type: ignore[index]
        assert spec["backoffLimit"] == 2  # type: ignore[index]
        container = spec["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert container["resources"] == {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        }
        wf.wait_phase("late", "Succeeded", timeout=120)
        assert "application done" in kube.kubectl("logs", "job/late-app").stdout
        late = wf.conditions("late")
        assert late["Succeeded"]["status"] == "True" and late["Failed"]["status"] == "False"
        assert wf.status("late")["tasks"]["done"] == 10
        # "bad"'s script failed, and with backoffLimit 0 the Job controller gave up at once.
        wf.wait_phase("bad", "Failed", timeout=60)
        bad = wf.conditions("bad")
        assert bad["Failed"]["status"] == "True" and bad["Succeeded"]["status"] == "False"
        assert "failed with exit code 7" in kube.kubectl("logs", "job/bad-app").stdout
        warnings = {e["reason"] for e in wf.events("bad") if e["type"] == "Warning"}
        assert "ApplicationFailed" in warnings, warnings
        wait_for(lambda: wf.workers("bad") == [], timeout=30, what="bad's workers to leave")
        assert wf.phase("bad") == "Failed" and wf.get("bad") is not None  # no TTL: kept
        # "never" was made unschedulable on purpose and given 30 s: it failed, and says why.
        wait_for(lambda: wf.phase("never") == "Failed", timeout=60, what="never to give up")
    finally:
        kube.kubectl("label", "node", node, f"{LABEL}-")
    never = wf.conditions("never")
    assert never["Failed"]["reason"] == "ManagerNotReady"
    assert "startTimeoutSeconds=30" in never["Failed"]["message"]
    assert job(kube, "never") is None
    wait_for(lambda: "ApplicationFailed" in wf.reasons("never"), timeout=15, what="ApplicationFailed")
