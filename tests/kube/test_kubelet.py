"""The process kubelet runs the emulator's pods as real local processes."""

from __future__ import annotations

import functools
import pathlib
import socket
import textwrap
from typing import Any

import yaml

from .emulator import KubeAPI
from .helpers import get, kubectl, wait_for
from .kubelet import Kubelet

# A tiny TCP echo server: binds $KUBEVINE_BIND_HOST:$PORT as kubevine processes do.
ECHO_SERVER = textwrap.dedent("""
    import os, socket, signal, sys
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    s = socket.create_server((os.environ["KUBEVINE_BIND_HOST"], int(os.environ.get("PORT", "8080"))))
    while True:
        conn, _ = s.accept()
        conn.sendall(os.environ.get("GREETING", "hello").encode())
        conn.close()
""")


def apply(api: KubeAPI, *docs: dict[str, Any]) -> None:
    kubectl(api, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def pods(api: KubeAPI, selector: str = "", namespace: str = "default") -> list[dict[str, Any]]:
    result = get(api, f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    return list(result["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_pods(api: KubeAPI, selector: str, count: int = 1) -> list[dict[str, Any]]:
    found = [p for p in pods(api, selector) if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
    return found if len(found) >= count else []


def phase(api: KubeAPI, pod: str) -> str:
    return str(get(api, f"/api/v1/namespaces/default/pods/{pod}")["status"]["phase"])


def finished(api: KubeAPI, pod: str) -> bool:
    return phase(api, pod) in ("Succeeded", "Failed")


def read_from(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as conn:
        return conn.recv(100)


def deployment(name: str, container: dict[str, Any], replicas: int = 1, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], **pod_spec},
            },
        },
    }


BIND_HOST_ENV = {"name": "KUBEVINE_BIND_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_deployment_runs_as_a_process_that_becomes_ready_on_its_pod_ip(
    kube_api: KubeAPI, kubelet: Kubelet
) -> None:
    apply(
        kube_api,
        deployment(
            "echo",
            {
                "name": "server",
                "image": "kubevine/test:dev",
                "command": ["python", "-c", ECHO_SERVER],
                "env": [BIND_HOST_ENV, {"name": "GREETING", "value": "hi from $(KUBEVINE_BIND_HOST)"}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            },
        ),
    )
    [pod] = wait_for(lambda: ready_pods(kube_api, "app=echo"), timeout=20, what="a Ready echo pod")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    assert pod["spec"]["nodeName"] in ("node-a", "node-b")
    assert read_from(ip, 8080) == f"hi from {ip}".encode()
    deploy = wait_for(
        lambda: (
            (d := get(kube_api, "/apis/apps/v1/namespaces/default/deployments/echo"))
            and d["status"].get("readyReplicas") == 1
            and d
        ),
        what="deployment status",
    )
    assert deploy["status"]["observedGeneration"] == 1


TERM_RECORDER = textwrap.dedent("""
    import os, pathlib, signal, sys, time
    out = pathlib.Path(sys.argv[1])
    def on_term(*_):
        prestop_ran = (out / "prestop").exists()
        (out / "sigterm").write_text("prestop-before-term" if prestop_ran else "no-prestop")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    (out / "started").write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)
""")


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": containers, **spec},
    }


def test_pod_deletion_runs_prestop_then_sigterm_then_removes_the_pod(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "signals"
    out.mkdir()
    apply(
        kube_api,
        pod_manifest(
            "graceful",
            [
                {
                    "name": "main",
                    "image": "kubevine/test:dev",
                    "command": ["python", "-c", TERM_RECORDER, str(out)],
                    "lifecycle": {
                        "preStop": {
                            "exec": {
                                "command": [
                                    "python",
                                    "-c",
                                    f"import pathlib; pathlib.Path({str(out)!r}, 'prestop').touch()",
                                ]
                            }
                        }
                    },
                }
            ],
            terminationGracePeriodSeconds=10,
        ),
    )
    wait_for(lambda: (out / "started").exists(), timeout=15, what="the container to start")
    kubectl(kube_api, "delete", "pod", "graceful", "--wait=true", timeout=30)
    assert (out / "sigterm").read_text() == "prestop-before-term"
    assert get(kube_api, "/api/v1/namespaces/default/pods/graceful") is None


def test_pod_ignoring_sigterm_is_killed_after_the_grace_period(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.05)"
    )
    apply(
        kube_api,
        pod_manifest(
            "stubborn",
            [{"name": "main", "image": "kubevine/test:dev", "command": ["python", "-c", stubborn]}],
            terminationGracePeriodSeconds=1,
        ),
    )
    wait_for(lambda: ready_pods(kube_api, "app=stubborn"), timeout=15, what="stubborn pod running")
    [run] = kubelet.runs.values()
    kubectl(kube_api, "delete", "pod", "stubborn", "--wait=true", timeout=30)
    assert run.containers[0].proc is not None and run.containers[0].proc.returncode == -9


def _writer(name: str, node: str, message: str) -> dict[str, Any]:
    script = f"import pathlib; pathlib.Path('/cache/{name}.txt').write_text({message!r})"
    return pod_manifest(
        name,
        [
            {
                "name": "main",
                "image": "kubevine/test:dev",
                "command": ["python", "-c", script],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            }
        ],
        nodeName=node,
        restartPolicy="Never",
        volumes=[{"name": "cache", "hostPath": {"path": "/var/cache/kubevine", "type": "DirectoryOrCreate"}}],
    )


def test_hostpath_is_shared_by_pods_on_one_node_and_not_across_nodes(
    kube_api: KubeAPI, kubelet: Kubelet
) -> None:
    reader = (
        "import os, pathlib; print(sorted(os.listdir('/cache')));"
        " pathlib.Path('/cache/seen-by-' + os.environ['POD'])"
        ".write_text(','.join(sorted(os.listdir('/cache'))))"
    )
    apply(kube_api, _writer("writer-a", "node-a", "from a"))
    wait_for(
        lambda: get(kube_api, "/api/v1/namespaces/default/pods/writer-a")["status"]["phase"] == "Succeeded",
        timeout=15,
        what="writer-a to finish",
    )
    for name, node in (("reader-a", "node-a"), ("reader-b", "node-b")):
        manifest = _writer(name, node, "")
        container = manifest["spec"]["containers"][0]
        container["command"] = ["python", "-c", reader]
        container["env"] = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        apply(kube_api, manifest)
    for name in ("reader-a", "reader-b"):
        wait_for(functools.partial(finished, kube_api, name), timeout=15, what=f"{name} to finish")
    node_a = kubelet.node_dir("node-a") / "var/cache/kubevine"
    node_b = kubelet.node_dir("node-b") / "var/cache/kubevine"
    assert (node_a / "writer-a.txt").read_text() == "from a"
    assert (node_a / "seen-by-reader-a").read_text() == "writer-a.txt"
    assert (node_b / "seen-by-reader-b").read_text() == ""


def test_service_hostnames_in_env_and_args_are_rewritten_to_a_ready_pod_ip(
    kube_api: KubeAPI, kubelet: Kubelet
) -> None:
    apply(
        kube_api,
        deployment(
            "backend",
            {
                "name": "server",
                "image": "kubevine/test:dev",
                "command": ["python", "-c", ECHO_SERVER],
                "env": [
                    BIND_HOST_ENV,
                    {"name": "PORT", "value": "7000"},
                    {"name": "GREETING", "value": "backend"},
                ],
                "readinessProbe": {"tcpSocket": {"port": 7000}, "periodSeconds": 1},
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "backend"},
            "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": 7000}]},
        },
    )
    client = (
        "import os, socket, sys, urllib.parse\n"
        "u = urllib.parse.urlparse(os.environ['BACKEND_URL'])\n"
        "print(os.environ['BACKEND_URL'], sys.argv[1:], flush=True)\n"
        "print(socket.create_connection((u.hostname, u.port)).recv(100).decode(), flush=True)\n"
    )
    apply(
        kube_api,
        pod_manifest(
            "client",
            [
                {
                    "name": "main",
                    "image": "kubevine/test:dev",
                    "command": [
                        "python",
                        "-c",
                        client,
                        "--backend",
                        "backend.default.svc.cluster.local:80",
                        "backend",
                    ],
                    "env": [{"name": "BACKEND_URL", "value": "tcp://backend:80/x"}],
                }
            ],
            restartPolicy="Never",
        ),
    )
    wait_for(
        lambda: get(kube_api, "/api/v1/namespaces/default/pods/client")["status"]["phase"] == "Succeeded",
        timeout=20,
        what="the client pod to finish",
    )
    [backend] = ready_pods(kube_api, "app=backend")
    ip = backend["status"]["podIP"]
    log = kubectl(kube_api, "logs", "client").stdout
    assert f"tcp://{ip}:7000/x ['--backend', '{ip}:7000', 'backend']" in log
    assert "backend" in log.splitlines()[-1]


def job(name: str, exit_code: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "kubevine/test:dev",
                            "command": [
                                "python",
                                "-c",
                                f"import sys; print('job {name}'); sys.exit({exit_code})",
                            ],
                        }
                    ],
                }
            },
        },
    }


def job_condition(api: KubeAPI, name: str) -> str | None:
    status = get(api, f"/apis/batch/v1/namespaces/default/jobs/{name}").get("status") or {}
    done = [
        c["type"]
        for c in status.get("conditions") or []
        if c["type"] in ("Complete", "Failed") and c["status"] == "True"
    ]
    return done[0] if done else None


def test_job_exit_0_completes_and_exit_1_fails(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(kube_api, job("ok", 0), job("bad", 1))
    assert wait_for(lambda: job_condition(kube_api, "ok"), timeout=20, what="job ok to finish") == "Complete"
    assert wait_for(lambda: job_condition(kube_api, "bad"), timeout=20, what="job bad to finish") == "Failed"
    ok = get(kube_api, "/apis/batch/v1/namespaces/default/jobs/ok")["status"]
    bad = get(kube_api, "/apis/batch/v1/namespaces/default/jobs/bad")["status"]
    assert (ok["succeeded"], ok["failed"]) == (1, 0)
    assert (bad["succeeded"], bad["failed"]) == (0, 1)
    [pod] = pods(kube_api, "job-name=bad")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_redis_image_runs_a_real_redis_server_on_the_pod_ip(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    import redis

    apply(
        kube_api,
        deployment(
            "redis",
            {
                "name": "redis",
                "image": "redis:7",
                "args": ["--port", "6379", "--appendonly", "yes", "--dir", "/data"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {
                    "exec": {"command": ["redis-cli", "-h", "$(POD_IP)", "ping"]},
                    "periodSeconds": 1,
                },
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            },
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
    )
    [pod] = wait_for(lambda: ready_pods(kube_api, "app=redis"), timeout=20, what="a Ready redis pod")
    client = redis.Redis(host=pod["status"]["podIP"], port=6379, socket_timeout=5)
    try:
        assert client.set("k", "v")
        assert client.get("k") == b"v"
        assert pathlib.Path(client.config_get("dir")["dir"]).is_dir()
    finally:
        client.close()


def test_container_that_crashes_is_restarted_and_counted(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(
        kube_api,
        pod_manifest(
            "crasher",
            [
                {
                    "name": "main",
                    "image": "kubevine/test:dev",
                    "command": ["python", "-c", "import sys; sys.exit(3)"],
                }
            ],
            restartPolicy="OnFailure",
        ),
    )

    def restarts() -> int:
        statuses = (
            get(kube_api, "/api/v1/namespaces/default/pods/crasher")["status"].get("containerStatuses") or []
        )
        return int(statuses[0]["restartCount"]) if statuses else 0

    wait_for(lambda: restarts() >= 2, timeout=20, what="two restarts")


def test_image_that_cannot_run_fails_the_pod_with_a_clear_reason(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(kube_api, pod_manifest("nginx", [{"name": "main", "image": "nginx:1.27"}]))
    pod = wait_for(
        lambda: (
            (p := get(kube_api, "/api/v1/namespaces/default/pods/nginx"))["status"]["phase"] == "Failed" and p
        ),
        timeout=15,
        what="the nginx pod to fail",
    )
    assert pod["status"]["reason"] == "ErrImageNeverPull"
    assert "kubevine" in pod["status"]["message"] and "redis" in pod["status"]["message"]


def test_secret_and_configmap_reach_env_and_volumes(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    script = (
        "import os, pathlib; print(os.environ['TOKEN'], os.environ['MODE'], "
        "pathlib.Path(os.environ['CONF_DIR'], 'app.conf').read_text(), sep='|')"
    )
    apply(
        kube_api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cret"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf"},
            "data": {"mode": "fast", "app.conf": "x=1"},
        },
        pod_manifest(
            "consumer",
            [
                {
                    "name": "main",
                    "image": "kubevine/test:dev",
                    "command": ["python", "-c", script],
                    "env": [
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}},
                        {"name": "CONF_DIR", "value": "/etc/app"},
                    ],
                    "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}],
                }
            ],
            restartPolicy="Never",
            volumes=[{"name": "conf", "configMap": {"name": "conf"}}],
        ),
    )
    wait_for(
        lambda: get(kube_api, "/api/v1/namespaces/default/pods/consumer")["status"]["phase"] == "Succeeded",
        timeout=15,
        what="the consumer pod to finish",
    )
    assert (kubelet.log_path("default", "consumer", "main").read_text().splitlines()[-1]) == "s3cret|fast|x=1"


def test_statefulset_pods_start_in_order_with_stable_names(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(
        kube_api,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 2,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "kubevine/test:dev",
                                "command": ["python", "-c", ECHO_SERVER],
                                "env": [BIND_HOST_ENV],
                                "readinessProbe": {"tcpSocket": {"port": 8080}},
                            }
                        ]
                    },
                },
            },
        },
    )
    ready = wait_for(lambda: ready_pods(kube_api, "app=db", count=2), timeout=20, what="two Ready db pods")
    assert sorted(p["metadata"]["name"] for p in ready) == ["db-0", "db-1"]
    first, second = sorted(ready, key=lambda p: p["metadata"]["name"])
    assert first["metadata"]["creationTimestamp"] <= second["metadata"]["creationTimestamp"]
    sts = wait_for(
        lambda: (
            (s := get(kube_api, "/apis/apps/v1/namespaces/default/statefulsets/db"))["status"].get(
                "readyReplicas"
            )
            == 2
            and s
        ),
        what="statefulset status",
    )
    assert sts["status"]["replicas"] == 2


def test_pods_follow_node_selector_and_spread_round_robin(kube_api: KubeAPI, kubelet_factory: Any) -> None:
    kubelet_factory(
        nodes=[{"name": "cpu-1"}, {"name": "gpu-1", "labels": {"accel": "gpu"}}, {"name": "cpu-2"}]
    )
    sleeper = {
        "name": "main",
        "image": "kubevine/test:dev",
        "command": ["python", "-c", "import signal; signal.pause()"],
    }
    apply(
        kube_api,
        deployment("spread", sleeper, replicas=3),
        deployment("gpu", sleeper, replicas=2, nodeSelector={"accel": "gpu"}),
    )
    gpu = wait_for(lambda: ready_pods(kube_api, "app=gpu", count=2), timeout=20, what="gpu pods")
    assert {p["spec"]["nodeName"] for p in gpu} == {"gpu-1"}
    spread = wait_for(lambda: ready_pods(kube_api, "app=spread", count=3), timeout=20, what="spread pods")
    assert len({p["spec"]["nodeName"] for p in spread}) >= 2


def test_failing_liveness_probe_restarts_the_container(kube_api: KubeAPI, kubelet: Kubelet) -> None:
    apply(
        kube_api,
        pod_manifest(
            "unhealthy",
            [
                {
                    "name": "main",
                    "image": "kubevine/test:dev",
                    "command": ["python", "-c", "import signal; signal.pause()"],
                    "livenessProbe": {
                        "exec": {"command": ["python", "-c", "raise SystemExit(1)"]},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
        ),
    )

    def restarted() -> bool:
        statuses = (
            get(kube_api, "/api/v1/namespaces/default/pods/unhealthy")["status"].get("containerStatuses")
            or []
        )
        return bool(statuses) and statuses[0]["restartCount"] >= 1

    wait_for(restarted, timeout=20, what="a liveness restart")
