"""Container status as a kubelet reports it, and garbage collection by the real controller-manager."""

from __future__ import annotations

import os

from .helpers import Kube, pid_of, wait_for
from .manifests import container, echo_deployment, pod


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_deleting_a_deployment_garbage_collects_its_replicaset_pods_and_processes(kube: Kube) -> None:
    kube.apply(echo_deployment("web", replicas=2))
    pods = wait_for(lambda: kube.running_pods("app=web", 2), timeout=60, what="2 web pods Ready")
    pids = [pid_of(p["status"]["containerStatuses"][0]) for p in pods]
    assert all(pid is not None and alive(pid) for pid in pids), pids
    [rs] = kube.get(f"/apis/apps/v1/namespaces/{kube.ns}/replicasets")["items"]
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert pods[0]["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]

    kube.kubectl("delete", "deployment", "web", "--wait=false")
    wait_for(lambda: not kube.pods("app=web"), timeout=60, what="the garbage collector to delete the pods")
    assert not kube.get(f"/apis/apps/v1/namespaces/{kube.ns}/replicasets")["items"]
    # The kubelet deleted each pod only once its process was gone.
    assert not [pid for pid in pids if pid is not None and alive(pid)]


def test_an_image_it_cannot_run_waits_in_image_pull_back_off(kube: Kube) -> None:
    kube.apply(pod("nginx", {"name": "web", "image": "nginx:1.27"}))

    def waiting_reasons() -> set[str]:
        state = kube.container_state("nginx").get("state") or {}
        seen.add((state.get("waiting") or {}).get("reason", ""))
        return seen

    seen: set[str] = set()
    wait_for(
        lambda: {"ErrImagePull", "ImagePullBackOff"} <= waiting_reasons(),
        timeout=30,
        what="both pull reasons",
    )
    status = kube.status_of("nginx")
    assert status["phase"] == "Pending"
    assert not status["containerStatuses"][0]["ready"]
    reasons = {e["reason"] for e in kube.events("nginx")}
    assert {"Scheduled", "Failed", "BackOff"} <= reasons, reasons


def test_exit_codes_crash_loop_back_off_and_oom_killed(kube: Kube) -> None:
    kube.apply(
        pod("exits", container("import sys; sys.exit(3)"), restartPolicy="Never"),
        pod("crashes", container("import sys; sys.exit(1)"), restartPolicy="Always"),
        pod(
            "hog",
            container("x = bytearray(300 * 2**20); print(len(x))", resources={"limits": {"memory": "64Mi"}}),
            restartPolicy="Never",
        ),
    )
    wait_for(lambda: kube.phase("exits") == "Failed", timeout=60, what="exits to fail")
    terminated = kube.container_state("exits")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")

    def crash_looping() -> bool:
        status = kube.container_state("crashes")
        waiting = (status.get("state") or {}).get("waiting") or {}
        return waiting.get("reason") == "CrashLoopBackOff" and status["restartCount"] >= 1

    wait_for(crash_looping, timeout=60, what="CrashLoopBackOff")
    last = kube.container_state("crashes")["lastState"]["terminated"]
    assert last["exitCode"] == 1

    wait_for(lambda: kube.phase("hog") == "Failed", timeout=60, what="hog to be killed")
    terminated = kube.container_state("hog")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled"), terminated


def test_hostpath_is_per_node(kube: Kube) -> None:
    """Two pods on different nodes write the same hostPath file; each node keeps its own."""
    write = "import os, socket; open('/data/who', 'w').write(os.environ['NODE'])"
    docs = []
    for name, node in (("w-a", "node-a"), ("w-b", "node-b")):
        docs.append(
            pod(
                name,
                container(
                    write,
                    env=[{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    volumeMounts=[{"name": "data", "mountPath": "/data"}],
                ),
                nodeName=node,
                restartPolicy="Never",
                volumes=[
                    {"name": "data", "hostPath": {"path": f"/tmp/{kube.ns}", "type": "DirectoryOrCreate"}}
                ],
            )
        )
    kube.apply(*docs)
    for name in ("w-a", "w-b"):
        wait_for(lambda: kube.phase(name) == "Succeeded", timeout=60, what=f"{name} to finish")  # noqa: B023
    root = kube.cluster.state_dir / "kubelet" / "nodes"
    for node in ("node-a", "node-b"):
        assert (root / node / "tmp" / kube.ns / "who").read_text() == node
    assert not os.path.exists(f"/tmp/{kube.ns}")
