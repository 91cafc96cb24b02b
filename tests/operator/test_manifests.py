"""The objects the operator creates for a VineWorkflow: what a platform engineer would see
with `kubectl get -o yaml`, checked against the Kubernetes schemas and against the
engine's CLI contract (flags, env, probes), without a cluster."""

from __future__ import annotations

import base64
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest

from kubevine.operator import manifests as m
from kubevine.operator.naming import (
    WorkflowRef,
    label_selector,
    manager_address,
    worker_pod_name,
)
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec, parse_spec
from kubevine.operator.workerpod import build_worker_pod

K8S_VERSION = "1.32.0"
REF = WorkflowRef(name="met", namespace="physics", uid="0f9a6a4e-1111-2222-3333-444455556666")
SETTINGS = OperatorSettings(
    default_image="registry.example/kubevine:9.9",
    redis_image="redis:7.4",
    node_cache_root="/srv/vine-cache",
    node_cache_size_limit="200Gi",
)

EXTERNAL: dict[str, Any] = {"stateStore": {"redisUrl": "redis://redis.db.svc:6379/0"}}
MANAGED: dict[str, Any] = {"stateStore": {"managed": True, "storageSize": "5Gi"}}
FULL: dict[str, Any] = {
    "image": "registry.example/kubevine:1.2",
    "imagePullPolicy": "Always",
    "manager": {
        "port": 9200,
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "8Gi"},
        },
        "nodeSelector": {"role": "control"},
        "tolerations": [{"key": "control", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "analysis-high",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"team": "cms"},
        "envFrom": [{"configMapRef": {"name": "site"}}],
    },
    "stateStore": {"managed": True, "storageSize": "10Gi", "storageClassName": "fast", "memory": "2Gi"},
    "workers": {
        "min": 1,
        "max": 6,
        "cores": 4,
        "memory": 8192,
        "disk": 20480,
        "gpus": 1,
        "idleTimeoutSeconds": 120,
        "drainTimeoutSeconds": 900,
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"kubevine.io/workflow": "met"}},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
        "serviceAccountName": "grid-user",
        "automountServiceAccountToken": True,
        "podLabels": {"team": "cms"},
        "volumes": [
            {"name": "cvmfs", "persistentVolumeClaim": {"claimName": "cvmfs", "readOnly": True}},
            {"name": "proxy", "secret": {"secretName": "x509-proxy", "defaultMode": 256}},
        ],
        "volumeMounts": [
            {"name": "cvmfs", "mountPath": "/cvmfs", "readOnly": True},
            {"name": "proxy", "mountPath": "/etc/grid-security/proxy", "readOnly": True},
        ],
        "env": [
            {"name": "OMP_NUM_THREADS", "value": "1"},
            {
                "name": "S3_KEY",
                "valueFrom": {"secretKeyRef": {"name": "s3", "key": "key"}},
            },
        ],
    },
    "application": {
        "image": "registry.example/analysis:3",
        "command": ["python", "-m", "met"],
        "args": ["--year", "2018"],
        "env": [{"name": "DATASET", "value": "nanoaod"}],
        "backoffLimit": 1,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
    },
    "security": {"encrypt": False},
}


def spec_of(source: dict[str, Any]) -> VineWorkflowSpec:
    return parse_spec(source)


def everything(source: dict[str, Any]) -> list[dict[str, Any]]:
    spec = spec_of(source)
    objects = m.build_children(REF, spec, SETTINGS, token="s3cr3t", redis_password="r3d1s")
    return [*objects, build_worker_pod(REF, spec, "a1b2c", SETTINGS)]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Pod":
        return [obj["spec"]]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return []


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# --- every object ------------------------------------------------------------------------


@pytest.mark.parametrize("source", [EXTERNAL, MANAGED, FULL], ids=["external", "managed", "full"])
def test_every_object_is_valid_for_kubernetes(source: dict[str, Any]) -> None:
    for obj in everything(source):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("source", [EXTERNAL, FULL], ids=["external", "full"])
def test_every_object_is_labelled_and_owned_by_its_workflow(
    source: dict[str, Any],
) -> None:
    for obj in everything(source):
        meta = obj["metadata"]
        assert meta["namespace"] == "physics"
        assert meta["name"].startswith("met-")
        assert meta["labels"]["app.kubernetes.io/name"] == "kubevine"
        assert meta["labels"]["app.kubernetes.io/instance"] == "met"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubevine-operator"
        assert meta["labels"]["app.kubernetes.io/component"]
        assert meta["labels"]["kubevine.io/workflow"] == "met"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubevine.io/v1alpha1",
                "kind": "VineWorkflow",
                "name": "met",
                "uid": REF.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_each_selector_selects_exactly_its_own_pods() -> None:
    objects = everything(FULL)
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()
    service = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "met-manager"]
    manager_pods = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    worker_labels = by_kind(objects, "Pod")["metadata"]["labels"]
    assert service[0]["spec"]["selector"].items() <= manager_pods.items()
    assert not service[0]["spec"]["selector"].items() <= worker_labels.items()
    assert label_selector(REF, "worker") == (
        "app.kubernetes.io/name=kubevine,app.kubernetes.io/instance=met,app.kubernetes.io/component=worker"
    )


@pytest.mark.parametrize("source", [EXTERNAL, FULL], ids=["external", "full"])
def test_every_pod_is_hardened(source: dict[str, Any]) -> None:
    for obj in everything(source):
        for pod in pod_specs(obj):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            # no service-account token unless a component asks for one (FULL's workers do)
            assert pod["automountServiceAccountToken"] is (source is FULL and obj["kind"] == "Pod")
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["readOnlyRootFilesystem"] is True
                assert security["allowPrivilegeEscalation"] is False
                assert security["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("source", [EXTERNAL, FULL], ids=["external", "full"])
def test_every_writable_path_under_a_read_only_root_is_a_volume(
    source: dict[str, Any],
) -> None:
    for obj in everything(source):
        for pod in pod_specs(obj):
            volumes = {v["name"] for v in pod["volumes"]}
            claims = obj["spec"].get("volumeClaimTemplates", []) if obj["kind"] != "Pod" else []
            volumes |= {c["metadata"]["name"] for c in claims}
            for container in pod["containers"]:
                mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
                assert "/tmp" in mounts, f"{obj['metadata']['name']} has no writable /tmp"
                for name in mounts.values():
                    assert name in volumes, f"{name} is mounted but not declared"


def test_the_image_defaults_to_the_operators_and_the_pull_policy_is_applied() -> None:
    for obj in everything(EXTERNAL):
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                assert container["image"] == "registry.example/kubevine:9.9"
                assert container["imagePullPolicy"] == "IfNotPresent"
    deployment = by_kind(everything(FULL), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == (
        "registry.example/kubevine:1.2",
        "Always",
    )


def test_the_manager_and_workers_log_json() -> None:
    for container in (manager_container(FULL), worker(FULL)["spec"]["containers"][0]):
        assert env_of(container)["KUBEVINE_LOG_FORMAT"] == "json"


def test_every_kubevine_command_line_is_accepted_by_the_kubevine_cli() -> None:
    """The args and the preStop hook parse with the real `kubevine` argument parser."""
    from kubevine.cli import build_parser

    parser = build_parser()
    pod = worker(FULL)
    commands = [
        manager_container(FULL)["args"],
        manager_container({"stateStore": {"credentialsSecret": {"name": "s", "urlKey": "u"}}})["args"],
        pod["spec"]["containers"][0]["args"],
        pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1:],
    ]
    for args in commands:
        parsed = parser.parse_args(args)
        assert parsed.command == args[0]


# --- token Secret ------------------------------------------------------------------------


def test_the_token_secret_holds_the_token_and_the_managed_redis_password() -> None:
    secret = by_kind(everything(MANAGED), "Secret")
    assert secret["metadata"]["name"] == "met-token"
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t"
    assert base64.b64decode(secret["data"]["redis-password"]) == b"r3d1s"
    external = by_kind(everything(EXTERNAL), "Secret")
    assert set(external["data"]) == {"token"}


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        m.build_token_secret(REF, "")


# --- manager -----------------------------------------------------------------------------


def manager_container(source: dict[str, Any]) -> dict[str, Any]:
    deployment = m.build_manager_deployment(REF, spec_of(source), SETTINGS)
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_manager_is_one_replica_replaced_not_rolled() -> None:
    deployment = m.build_manager_deployment(REF, spec_of(EXTERNAL), SETTINGS)
    assert deployment["metadata"]["name"] == "met-manager"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_manager_runs_the_manager_subcommand_with_the_contract_flags() -> None:
    args = manager_container(FULL)["args"]
    assert args[0] == "manager"
    assert flag(args, "--port") == "9200"
    assert flag(args, "--name") == "met"
    assert flag(args, "--redis") == "redis://met-redis.physics.svc:6379/0"
    assert flag(args, "--token-file") == "/var/run/kubevine/token"
    assert flag(args, "--metrics-port") == "9090"
    assert flag(args, "--workdir") == "/var/lib/kubevine/work"


def test_the_manager_binds_all_addresses_advertises_its_pod_ip_and_reads_its_token_from_the_secret() -> None:
    container = manager_container(EXTERNAL)
    assert flag(container["args"], "--host") == "0.0.0.0"  # the pod IP and 127.0.0.1 (port-forward)
    env = env_of(container)
    assert "KUBEVINE_BIND_HOST" not in env
    assert env["KUBEVINE_ADVERTISE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["KUBEVINE_TOKEN"] == {"secretKeyRef": {"name": "met-token", "key": "token"}}
    token_mount = next(v for v in container["volumeMounts"] if v["name"] == "token")
    assert token_mount["readOnly"] is True


def test_the_manager_is_ready_when_zmq_accepts_and_alive_while_healthz_answers() -> None:
    container = manager_container(FULL)
    assert container["readinessProbe"]["tcpSocket"] == {"port": 9200}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9090}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"zmq": 9200, "metrics": 9090}


def test_the_manager_gets_the_spec_resources_and_placement() -> None:
    deployment = m.build_manager_deployment(REF, spec_of(FULL), SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert pod["nodeSelector"] == {"role": "control"}
    assert pod["tolerations"] == [{"key": "control", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "analysis-high"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["team"] == "cms"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "site"}}]


def test_an_external_redis_url_is_passed_and_its_password_comes_from_the_secret() -> None:
    source = {
        "stateStore": {
            "redisUrl": "redis://r.db:6379/1",
            "credentialsSecret": {"name": "redis-creds", "passwordKey": "pw"},
        }
    }
    container = manager_container(source)
    assert flag(container["args"], "--redis") == "redis://r.db:6379/1"
    assert env_of(container)["KUBEVINE_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-creds", "key": "pw", "optional": True}
    }
    assert "KUBEVINE_REDIS_URL" not in env_of(container)


def test_a_redis_url_kept_in_a_secret_is_never_on_the_command_line() -> None:
    source = {"stateStore": {"credentialsSecret": {"name": "redis-creds", "urlKey": "url"}}}
    container = manager_container(source)
    assert "--redis" not in container["args"]
    assert env_of(container)["KUBEVINE_REDIS_URL"] == {"secretKeyRef": {"name": "redis-creds", "key": "url"}}


def test_the_manager_service_exposes_zmq_and_metrics_inside_the_cluster() -> None:
    service = m.build_manager_service(REF, spec_of(FULL))
    assert service["metadata"]["name"] == "met-manager"
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"zmq": (9200, 9200), "metrics": (9090, 9090)}
    assert manager_address(REF, spec_of(FULL)) == "met-manager.physics.svc:9200"


# --- managed Redis -----------------------------------------------------------------------


def test_a_managed_redis_runs_with_an_append_only_file_on_its_own_volume() -> None:
    statefulset = m.build_redis_statefulset(REF, spec_of(FULL), SETTINGS)
    assert statefulset["metadata"]["name"] == "met-redis"
    assert statefulset["spec"]["replicas"] == 1
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "redis:7.4"
    command = container["command"] + container["args"]
    assert command[:11] == [
        "redis-server",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--dir",
        "/data",
        "--bind",
        "0.0.0.0",
        "--port",
        "6379",
    ]
    assert flag(command, "--requirepass") == "$(REDIS_PASSWORD)"
    # 2Gi of memory, 80% of it for data, and a full store refuses writes instead of evicting state.
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["resources"]["requests"]["memory"] == "2Gi"
    assert flag(command, "--maxmemory") == str(2 * 1024**3 * 8 // 10)
    assert flag(command, "--maxmemory-policy") == "noeviction"
    env = env_of(container)
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "met-token", "key": "redis-password"}}
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_the_managed_redis_uses_the_cluster_default_storage_class_unless_told() -> None:
    statefulset = m.build_redis_statefulset(REF, spec_of(MANAGED), SETTINGS)
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert "storageClassName" not in claim
    assert claim["resources"]["requests"]["storage"] == "5Gi"


def test_the_manager_of_a_managed_store_gets_the_redis_password() -> None:
    env = env_of(manager_container(MANAGED))
    assert env["KUBEVINE_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "met-token", "key": "redis-password"}}


def test_no_redis_is_built_for_an_external_store() -> None:
    kinds = [o["kind"] for o in everything(EXTERNAL)]
    assert "StatefulSet" not in kinds
    with pytest.raises(ValueError, match="managed"):
        m.build_redis_statefulset(REF, spec_of(EXTERNAL), SETTINGS)


def test_a_managed_store_needs_a_redis_password() -> None:
    with pytest.raises(ValueError, match="redis_password"):
        m.build_children(REF, spec_of(MANAGED), SETTINGS, token="t")


# --- worker pods -------------------------------------------------------------------------


def worker(source: dict[str, Any], suffix: str = "a1b2c") -> dict[str, Any]:
    return build_worker_pod(REF, spec_of(source), suffix, SETTINGS)


def test_a_worker_pod_is_named_after_its_workflow_and_suffix() -> None:
    assert worker(EXTERNAL, "x9")["metadata"]["name"] == "met-worker-x9"
    assert worker(EXTERNAL)["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"


@pytest.mark.parametrize("suffix", ["", "ABC", "a-b", "abcdefghijk"])
def test_a_worker_suffix_that_breaks_the_name_is_refused(suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        worker_pod_name(REF, suffix)


def test_a_worker_connects_to_the_manager_service_with_its_size() -> None:
    container = worker(FULL)["spec"]["containers"][0]
    args = container["args"]
    assert args[:2] == ["worker", "met-manager.physics.svc:9200"]
    assert flag(args, "--cores") == "4"
    assert flag(args, "--memory") == "8192"
    assert flag(args, "--disk") == "20480"
    assert flag(args, "--gpus") == "1"
    assert flag(args, "--node") == "$(KUBEVINE_NODE_NAME)"


def test_a_worker_leaves_only_when_the_operator_says_so() -> None:
    args = worker(FULL)["spec"]["containers"][0]["args"]
    assert flag(args, "--idle-timeout") == "0"


def test_a_worker_knows_its_pod_ip_node_pod_and_token() -> None:
    env = env_of(worker(EXTERNAL)["spec"]["containers"][0])
    assert env["KUBEVINE_BIND_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}  # its transfer server
    assert env["KUBEVINE_ADVERTISE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["KUBEVINE_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["KUBEVINE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KUBEVINE_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KUBEVINE_TOKEN"] == {"secretKeyRef": {"name": "met-token", "key": "token"}}


def test_a_worker_mounts_its_namespaces_node_cache_folder_under_the_operators_root() -> None:
    pod = worker(FULL)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    # The root is the operator's setting; the folder is the namespace's; it must already exist
    # (the node-cache DaemonSet makes it, owned by the workers' user).
    assert volumes["node-cache"]["hostPath"] == {"path": "/srv/vine-cache/physics", "type": "Directory"}
    container = pod["spec"]["containers"][0]
    mount = next(v for v in container["volumeMounts"] if v["name"] == "node-cache")
    assert flag(container["args"], "--cache-dir") == mount["mountPath"]
    assert env_of(container)["KUBEVINE_CACHE_SIZE_MB"] == str(200 * 1024)


def test_two_workflows_of_one_namespace_share_a_folder_and_other_namespaces_do_not() -> None:
    first, second = worker(FULL, "aaaaa"), worker(FULL, "bbbbb")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["spec"]["volumes"] == second["spec"]["volumes"]
    other = WorkflowRef(name="met", namespace="astro", uid="u")
    elsewhere = build_worker_pod(other, spec_of(FULL), "ccccc", SETTINGS)
    paths = {
        v["hostPath"]["path"] for p in (first, elsewhere) for v in p["spec"]["volumes"] if "hostPath" in v
    }
    assert paths == {"/srv/vine-cache/physics", "/srv/vine-cache/astro"}


@pytest.mark.parametrize(
    ("settings", "workers"),
    [(OperatorSettings(node_cache_enabled=False), {}), (SETTINGS, {"nodeCache": {"enabled": False}})],
    ids=["operator-off", "workflow-off"],
)
def test_without_the_node_cache_a_worker_has_a_cache_of_its_own_and_no_host_folder(
    settings: OperatorSettings, workers: dict[str, Any]
) -> None:
    pod = build_worker_pod(REF, spec_of({**EXTERNAL, "workers": workers}), "a1b2c", settings)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["node-cache"] == {"name": "node-cache", "emptyDir": {}}
    assert "KUBEVINE_CACHE_SIZE_MB" not in env_of(pod["spec"]["containers"][0])


def test_a_worker_requests_exactly_what_it_advertises() -> None:
    resources = worker(FULL)["spec"]["containers"][0]["resources"]
    expected = {
        "cpu": "4",
        "memory": "8192Mi",
        "ephemeral-storage": "20480Mi",
        "nvidia.com/gpu": "1",
    }
    assert resources == {"requests": expected, "limits": expected}


def test_a_worker_without_gpus_or_disk_limit_asks_for_neither() -> None:
    source = {**EXTERNAL, "workers": {"disk": 0}}
    resources = worker(source)["spec"]["containers"][0]["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    work = next(v for v in worker(source)["spec"]["volumes"] if v["name"] == "work")
    assert work["emptyDir"] == {}


def test_a_worker_sandbox_is_limited_to_its_disk() -> None:
    work = next(v for v in worker(FULL)["spec"]["volumes"] if v["name"] == "work")
    assert work["emptyDir"] == {"sizeLimit": "20480Mi"}


def test_a_deleted_worker_drains_before_it_stops_and_has_time_to_finish() -> None:
    pod = worker(FULL)
    container = pod["spec"]["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["kubevine", "drain-local"]
    assert flag(command, "--workdir") == flag(container["args"], "--workdir")
    assert flag(command, "--timeout") == "900"
    assert pod["spec"]["terminationGracePeriodSeconds"] > 900


def test_an_exited_worker_is_not_restarted_in_place() -> None:
    assert worker(EXTERNAL)["spec"]["restartPolicy"] == "Never"


def test_a_worker_gets_the_site_options_of_the_pool() -> None:
    whole = worker(FULL)
    pod = whole["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["affinity"] == FULL["workers"]["affinity"]
    assert pod["serviceAccountName"] == "grid-user"
    assert pod["automountServiceAccountToken"] is True
    assert whole["metadata"]["labels"]["team"] == "cms"
    assert whole["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cvmfs"] == {
        "name": "cvmfs",
        "persistentVolumeClaim": {"claimName": "cvmfs", "readOnly": True},
    }
    assert volumes["proxy"]["secret"] == {"secretName": "x509-proxy", "defaultMode": 256}
    mounts = {v["mountPath"]: v for v in pod["containers"][0]["volumeMounts"]}
    assert mounts["/cvmfs"] == {"name": "cvmfs", "mountPath": "/cvmfs", "readOnly": True}
    env = env_of(pod["containers"][0])
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["S3_KEY"] == {"secretKeyRef": {"name": "s3", "key": "key"}}


@pytest.mark.parametrize("source", [EXTERNAL, MANAGED, FULL], ids=["external", "managed", "full"])
def test_no_container_of_a_workflow_runs_as_root(source: dict[str, Any]) -> None:
    for obj in everything(source):
        for pod in pod_specs(obj):
            assert "initContainers" not in pod
            assert pod["securityContext"]["runAsUser"] != 0
            for container in pod["containers"]:
                assert container["securityContext"].get("runAsUser", 1) != 0
                assert "add" not in container["securityContext"]["capabilities"]


def test_every_pod_sets_the_workflows_encryption() -> None:
    for source, wanted in ((EXTERNAL, "1"), (FULL, "0")):
        for obj in everything(source):
            for pod in pod_specs(obj):
                for container in pod["containers"]:
                    if "kubevine" in container["image"] or obj["kind"] == "Job":
                        assert env_of(container)["KUBEVINE_ENCRYPT"] == wanted, obj["kind"]


def test_the_manager_and_redis_cannot_be_evicted_by_a_node_drain() -> None:
    budgets = [o for o in everything(MANAGED) if o["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} == {"met-manager", "met-redis"}
    for budget in budgets:
        assert budget["spec"]["maxUnavailable"] == 0
        component = budget["metadata"]["labels"]["app.kubernetes.io/component"]
        assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
    none = m.build_children(
        REF, spec_of(MANAGED), OperatorSettings(pod_disruption_budgets=False), token="t", redis_password="p"
    )
    assert "PodDisruptionBudget" not in {o["kind"] for o in none}


# --- application -------------------------------------------------------------------------


def test_the_application_runs_once_against_the_manager() -> None:
    job = m.build_application_job(REF, spec_of(FULL), SETTINGS)
    assert job["metadata"]["name"] == "met-app"
    assert job["spec"]["backoffLimit"] == 1
    assert (
        m.build_application_job(REF, spec_of({**EXTERNAL, "application": {"command": ["x"]}}), SETTINGS)[
            "spec"
        ]["backoffLimit"]
        == 2
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "3Gi"},
    }
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["image"] == "registry.example/analysis:3"
    assert container["command"] == ["python", "-m", "met"]
    assert container["args"] == ["--year", "2018"]
    env = env_of(container)
    assert env["KUBEVINE_MANAGER"] == "met-manager.physics.svc:9200"
    assert env["KUBEVINE_TOKEN"] == {"secretKeyRef": {"name": "met-token", "key": "token"}}
    assert env["DATASET"] == "nanoaod"


def test_the_application_image_defaults_to_the_workflow_image() -> None:
    source = {**EXTERNAL, "image": "wf:1", "application": {"command": ["run"]}}
    job = m.build_application_job(REF, spec_of(source), SETTINGS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "wf:1"
    assert "args" not in container
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }


def test_children_come_in_creation_order() -> None:
    names = [(o["kind"], o["metadata"]["name"]) for o in everything(FULL)[:-1]]
    assert names == [
        ("Secret", "met-token"),
        ("Service", "met-redis"),
        ("StatefulSet", "met-redis"),
        ("Service", "met-manager"),
        ("Deployment", "met-manager"),
        ("Job", "met-app"),
        ("PodDisruptionBudget", "met-manager"),
        ("PodDisruptionBudget", "met-redis"),
    ]
    assert [o["kind"] for o in everything(EXTERNAL)[:-1]] == [
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ]


def test_building_is_pure_and_repeatable() -> None:
    assert everything(FULL) == everything(FULL)
