"""Every example of examples/kubernetes, applied with kubectl as shipped, runs on the real
control plane: the interactive pool with a managed Redis, the same pool against an external
Redis (here the `redis` of a `databases` namespace, as the example names it), and the
application workflow to its end."""

from __future__ import annotations

from kubevine import Task

from .controlplane import REPO
from .helpers import Kube, wait_for
from .vine import Release, Workflows, redis_server, run_all

EXAMPLES = REPO / "examples" / "kubernetes"


def test_every_kubernetes_example_applies_and_runs(
    kubevine: Release, kube_factory: object, kube: Kube
) -> None:
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert [p.name for p in paths] == ["workflow-app.yaml", "workflow.yaml"]
    # The external Redis the example points at: redis://redis.databases.svc:6379/3, password in
    # its own Secret "analysis-redis" (change-me).
    databases = Kube(kube.cluster, "databases")
    databases.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "databases"}})
    try:
        databases.apply(*redis_server(password="change-me", node="node-a"))
        wait_for(lambda: databases.running_pods("app=redis", 1), timeout=60, what="the databases Redis")
        for path in paths:
            kube.kubectl("apply", "-f", str(path))
        wf = Workflows(kube)
        for name in ("analysis", "analysis-ext", "met-histogram"):
            assert wf.get(name) is not None, name
        wf.wait_phase("analysis", "Running")
        wf.wait_phase("analysis-ext", "Running")
        wait_for(lambda: wf.status("analysis-ext").get("workers", {}).get("connected") == 1, timeout=60,
                 what="analysis-ext's min 1 worker")  # fmt: skip
        with wf.client("analysis") as m:  # what the example's comment says a client does
            tasks = [Task(f"python3 -c 'print({i} ** 2)'", cores=1) for i in range(8)]
            run_all(m, tasks)
        assert sorted(int(t.output) for t in tasks) == [i**2 for i in range(8)]
        wf.wait_phase("met-histogram", "Succeeded", timeout=180)
        assert "all 100 tasks succeeded" in kube.kubectl("logs", "job/met-histogram-app").stdout
        pods = kube.pods("kubevine.io/workflow=analysis")
        images = {
            p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]["containers"][0]["image"]
            for p in pods
        }
        # The examples name no image: the operator's default, the chart's image.repository:tag.
        assert images["manager"] == images["worker"] == "ghcr.io/kubevine/kubevine:0.1.0"
        assert images["redis"] == "redis:7.4-alpine"
    finally:
        databases.kubectl("delete", "namespace", "databases", "--wait=false", check=False)
        wait_for(
            lambda: not databases.pods(), timeout=90, interval=0.3, what="the databases namespace to empty"
        )
