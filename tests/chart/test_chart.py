"""The Helm chart, linted and rendered by Helm's own Go SDK (helm-python-sdk): what
`helm install` would send to the cluster, checked against the Kubernetes schemas, against
least-privilege RBAC, and against what the operator's code expects to find."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from kubevine.operator import manifests
from kubevine.operator.naming import WorkflowRef
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import parse_spec
from kubevine.operator.workerpod import build_worker_pod

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubevine"
K8S_VERSION = "1.32.0"
RELEASE, NAMESPACE = "kv", "kubevine-system"

VARIATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cluster-wide": {"rbac": {"clusterWide": True}},
    "watch-namespaces": {"operator": {"watchNamespaces": ["physics", "astro"]}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "custom-image": {
        "image": {
            "repository": "registry.example/kv",
            "tag": "2.0",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "operator-service-monitor": {
        "metrics": {"operator": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    },
    "operator-metrics-off": {"metrics": {"operator": {"port": 0}}},
    "shared-redis": {"redis": {"shared": {"enabled": True, "storageClassName": "fast"}}},
    "two-replicas": {"replicaCount": 2, "nodeSelector": {"role": "ops"}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def crd_schema(filename: str, kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((CHART / "crds" / filename).read_text()):
        if doc["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"{kind} not in {filename}")


# --- lint --------------------------------------------------------------------------------


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_helm_lint_finds_no_error_or_warning(variation: str) -> None:
    report = helm.lint(CHART, VARIATIONS[variation], strict=True, namespace=NAMESPACE, kube_version="v1.32.0")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


# --- every object ------------------------------------------------------------------------


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_every_rendered_object_is_valid_for_kubernetes(chart: helm.Chart, variation: str) -> None:
    objects = render(chart, VARIATIONS[variation])
    assert objects
    for obj in objects:
        if obj["apiVersion"] == "kopf.dev/v1":
            schema = crd_schema("kopfpeerings.kopf.dev.yaml", obj["kind"])
            jsonschema.validate(obj, schema)
        elif obj["kind"] == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["spec"]["endpoints"]
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_every_rendered_object_carries_the_release_labels(chart: helm.Chart, variation: str) -> None:
    for obj in render(chart, VARIATIONS[variation]):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# --- the operator Deployment -------------------------------------------------------------


def test_the_operator_runs_namespaced_in_the_release_namespace_by_default(
    chart: helm.Chart,
) -> None:
    container = operator_container(render(chart, {}))
    assert container["args"] == ["operator", f"--namespace={NAMESPACE}"]


def test_the_operator_watches_the_namespaces_it_is_given(chart: helm.Chart) -> None:
    container = operator_container(render(chart, VARIATIONS["watch-namespaces"]))
    assert container["args"] == ["operator", "--namespace=physics", "--namespace=astro"]


def test_a_cluster_wide_operator_watches_all_namespaces(chart: helm.Chart) -> None:
    container = operator_container(render(chart, VARIATIONS["cluster-wide"]))
    assert container["args"] == ["operator", "--all-namespaces"]


def test_the_operator_is_restarted_when_its_health_endpoint_stops_answering(
    chart: helm.Chart,
) -> None:
    container = operator_container(render(chart, {}))
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080


def test_the_operator_pod_is_hardened_by_default(chart: helm.Chart) -> None:
    deployment = one(render(chart, {}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "512Mi"


def test_the_operator_settings_from_the_chart_are_understood_by_the_operator(
    chart: helm.Chart,
) -> None:
    container = operator_container(render(chart, VARIATIONS["custom-image"]))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = OperatorSettings.from_env(env)
    assert settings.default_image == "registry.example/kv:2.0"
    assert settings.redis_image == "redis:7.4-alpine"
    assert settings.peering_name == "kv-kubevine"
    assert settings.stabilization_seconds == 60
    assert settings.max_create_per_step == 10
    assert set(env) - {"POD_NAME", "POD_NAMESPACE"} == {
        OperatorSettings.env_name(field) for field in OperatorSettings.model_fields
    }


def test_a_custom_image_is_used_for_the_operator(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["custom-image"])
    container = operator_container(objects)
    assert container["image"] == "registry.example/kv:2.0"
    assert container["imagePullPolicy"] == "Always"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_image_tag_defaults_to_the_app_version(chart: helm.Chart) -> None:
    assert operator_container(render(chart, {}))["image"] == (
        f"ghcr.io/kubevine/kubevine:{chart.metadata['appVersion']}"
    )


# --- RBAC --------------------------------------------------------------------------------

#: What the operator calls, as the audit log of a real API server shows it running as this
#: ServiceAccount (tests/realkube/test_operator_rbac.py checks the two against each other).
WORKFLOW_RULES = {
    ("kubevine.io", "vineworkflows"): {"list", "watch", "patch", "delete"},
    ("kubevine.io", "vineworkflows/status"): {"patch"},
    ("kubevine.io", "vineworkflows/finalizers"): {"update"},
    ("", "pods"): {"list", "watch", "create", "delete"},
    ("", "services"): {"list", "watch", "create", "patch"},
    ("", "secrets"): {"get", "create"},
    ("", "events"): {"create"},
    ("apps", "deployments"): {"list", "watch", "create", "patch"},
    ("apps", "statefulsets"): {"list", "watch", "create", "patch"},
    ("batch", "jobs"): {"list", "watch", "create"},
    ("policy", "poddisruptionbudgets"): {"list", "watch", "create", "patch"},
}


def operator_cluster_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "kv-kubevine")


def permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_namespaced_rbac_by_default_with_exactly_the_verbs_used(
    chart: helm.Chart,
) -> None:
    objects = render(chart, {})
    assert "ClusterRole" not in kinds(objects)
    assert "ClusterRoleBinding" not in kinds(objects)
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert permissions(role) == {
        **WORKFLOW_RULES,
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"},
    }
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": NAMESPACE,
        }
    ]
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_cluster_wide_rbac_when_asked(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["cluster-wide"])
    assert "Role" not in kinds(objects)
    role = operator_cluster_role(objects)
    assert permissions(role) == {
        **WORKFLOW_RULES,
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    binding = next(
        o for o in objects if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "kv-kubevine"
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }


def test_a_role_is_created_in_every_watched_namespace(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["watch-namespaces"])
    roles = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "Role")
    bindings = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "RoleBinding")
    peerings = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "KopfPeering")
    assert roles == bindings == peerings == ["astro", "physics"]


def test_rbac_grants_no_wildcards_and_never_reads_all_secrets(
    chart: helm.Chart,
) -> None:
    for variation in ("defaults", "cluster-wide"):
        for role in (o for o in render(chart, VARIATIONS[variation]) if o["kind"] in ("Role", "ClusterRole")):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"list", "watch"} & permissions(role).get(("", "secrets"), set())


def test_rbac_allows_creating_every_object_the_operator_builds(
    chart: helm.Chart,
) -> None:
    role = one(render(chart, {}), "Role")
    granted = permissions(role)
    ref = WorkflowRef(name="wf", namespace=NAMESPACE, uid="u")
    spec = parse_spec({"stateStore": {"managed": True}, "application": {"command": ["run"]}})
    settings = OperatorSettings()
    built = manifests.build_children(ref, spec, settings, token="t", redis_password="p")
    built.append(build_worker_pod(ref, spec, "abc", settings))
    plural = {
        "Secret": ("", "secrets"),
        "Service": ("", "services"),
        "Deployment": ("apps", "deployments"),
        "StatefulSet": ("apps", "statefulsets"),
        "Job": ("batch", "jobs"),
        "Pod": ("", "pods"),
        "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
        "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    }
    for obj in built:
        assert "create" in granted[plural[obj["kind"]]], obj["kind"]
    assert "delete" in granted[("", "pods")]  # scale-down removes chosen worker pods
    with_policies = permissions(one(render(chart, {"networkPolicy": {"enabled": True}}), "Role"))
    policies = OperatorSettings(network_policy=True)
    for obj in manifests.build_children(ref, spec, policies, token="t", redis_password="p"):
        assert "create" in with_policies[plural[obj["kind"]]], obj["kind"]
    no_budgets = permissions(one(render(chart, {"podDisruptionBudgets": {"enabled": False}}), "Role"))
    assert ("policy", "poddisruptionbudgets") not in no_budgets


def test_rbac_can_be_left_to_the_cluster_admin(chart: helm.Chart) -> None:
    objects = render(chart, {"rbac": {"create": False, "clusterWide": False}})
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & set(kinds(objects))


# --- peering -----------------------------------------------------------------------------


def test_replicas_share_a_peering_object_of_the_right_scope(chart: helm.Chart) -> None:
    namespaced = one(render(chart, VARIATIONS["two-replicas"]), "KopfPeering")
    assert namespaced["metadata"] == {
        "name": "kv-kubevine",
        "namespace": NAMESPACE,
        "labels": namespaced["metadata"]["labels"],
    }
    cluster = render(chart, VARIATIONS["cluster-wide"])
    assert one(cluster, "ClusterKopfPeering")["metadata"]["name"] == "kv-kubevine"
    assert "KopfPeering" not in kinds(cluster)


# --- ServiceMonitor ----------------------------------------------------------------------


def test_no_service_monitor_unless_asked(chart: helm.Chart) -> None:
    assert "ServiceMonitor" not in kinds(render(chart, {}))


def test_the_service_monitor_scrapes_the_manager_services_the_operator_creates(
    chart: helm.Chart,
) -> None:
    monitor = one(render(chart, VARIATIONS["service-monitor"]), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    ref = WorkflowRef(name="wf", namespace=NAMESPACE, uid="u")
    service = manifests.build_manager_service(ref, parse_spec({"stateStore": {"managed": True}}))
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_a_cluster_wide_service_monitor_looks_in_every_namespace(
    chart: helm.Chart,
) -> None:
    values = {**VARIATIONS["service-monitor"], **VARIATIONS["cluster-wide"]}
    monitor = one(render(chart, values), "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


# --- the operator's own /metrics ---------------------------------------------------------


def test_the_operator_serves_metrics_on_the_port_its_service_targets(chart: helm.Chart) -> None:
    objects = render(chart, {})
    container = operator_container(objects)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    port = OperatorSettings.from_env(env).metrics_port  # what the operator will bind
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port == 9091
    (service,) = [o for o in objects if o["kind"] == "Service"]
    assert service["metadata"]["name"] == f"{RELEASE}-kubevine-metrics"
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert (service_port["name"], service_port["port"], service_port["targetPort"]) == (
        "metrics",
        port,
        "metrics",
    )


def test_the_operator_service_monitor_scrapes_the_operator_service_only_when_asked(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["operator-service-monitor"])
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # the managers' monitor must not pick the operator's Service up, nor this one a manager's
    manager_selector = {"app.kubernetes.io/component": "manager"}
    assert not manager_selector.items() <= service["metadata"]["labels"].items()
    both = render(
        chart,
        {"metrics": {"serviceMonitor": {"enabled": True}, "operator": {"serviceMonitor": {"enabled": True}}}},
    )
    assert len([o for o in both if o["kind"] == "ServiceMonitor"]) == 2


def test_metrics_port_0_turns_the_operator_endpoint_and_its_service_off(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["operator-metrics-off"])
    container = operator_container(objects)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert OperatorSettings.from_env(env).metrics_port == 0
    assert "metrics" not in {p["name"] for p in container["ports"]}
    assert "Service" not in kinds(objects)


# --- shared Redis ------------------------------------------------------------------------


def test_a_shared_redis_keeps_an_append_only_file_and_a_generated_password(
    chart: helm.Chart,
) -> None:
    objects = render(chart, VARIATIONS["shared-redis"])
    statefulset = one(objects, "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["redis-server"]
    assert container["args"][:4] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    assert claim["resources"]["requests"]["storage"] == "8Gi"
    secret = one(objects, "Secret")
    assert len(secret["data"]["password"]) > 32
    password_ref = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    assert password_ref["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_a_shared_redis_can_use_an_existing_password_secret(chart: helm.Chart) -> None:
    objects = render(chart, {"redis": {"shared": {"enabled": True, "existingSecret": "mine"}}})
    assert "Secret" not in kinds(objects)
    container = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    password_ref = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    assert password_ref["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_no_redis_is_installed_by_default(chart: helm.Chart) -> None:
    assert "StatefulSet" not in kinds(render(chart, {}))


# --- values.schema.json ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": -1}, "/replicaCount"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": 1.5}, "/replicaCount"),
        ({"replicaCount": None}, "replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas'"),
        ({"rbac": {"clusterwide": True}}, "additional properties 'clusterwide'"),
        ({"rbac": {"clusterWide": "yes"}}, "/rbac/clusterWide"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"operator": {"watchNamespaces": ["Bad_NS"]}}, "/operator/watchNamespaces/0"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"operator": {"autoscaler": {"maxCreatePerStep": 0}}}, "maxCreatePerStep"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        (
            {"metrics": {"serviceMonitor": {"interval": "soon"}}},
            "/metrics/serviceMonitor/interval",
        ),
        ({"redis": {"shared": {"storageSize": "-1Gi"}}}, "/redis/shared/storageSize"),
        ({"metrics": {"operator": {"port": -1}}}, "/metrics/operator/port"),
        ({"metrics": {"operator": {"port": 8080}}}, "/metrics/operator/port"),  # the liveness port
        ({"metrics": {"operator": {"port": "http"}}}, "/metrics/operator/port"),
        ({"podLabels": {"team": 7}}, "/podLabels/team"),
    ],
)
def test_bad_values_are_refused_by_helm(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(caught.value)


def test_bad_values_fail_helm_lint_too() -> None:
    report = helm.lint(CHART, {"replicaCount": -1})
    assert any("/replicaCount" in error for error in report["errors"])


def _value_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, child in node.items():
        path = (*prefix, key)
        yield path
        is_data = str(child.get("description", "")).startswith("core/v1")  # e.g. resources
        if isinstance(child, dict) and "properties" in child and not is_data:
            yield from _value_paths(child["properties"], path)


def _yaml_keys_with_comments() -> dict[tuple[str, ...], bool]:
    """Each key path in values.yaml, and whether a comment line sits right above it."""
    stack: list[tuple[int, str]] = []
    found: dict[tuple[str, ...], bool] = {}
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = stripped.split(":", 1)[0]
            stack.append((indent, key))
            found[tuple(k for _, k in stack)] = previous.startswith("#")
        previous = stripped
    return found


def test_every_value_is_declared_in_the_schema_and_commented_in_values_yaml(
    chart: helm.Chart,
) -> None:
    schema = chart.schema
    assert schema is not None
    declared = set(_value_paths(schema["properties"])) - {("global",)}
    documented = _yaml_keys_with_comments()
    missing = sorted(p for p in declared if p not in documented)
    uncommented = sorted(p for p in declared if p in documented and not documented[p])
    assert missing == []
    assert uncommented == []


def test_the_default_values_pass_their_own_schema(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)


# --- CRDs --------------------------------------------------------------------------------


def test_the_chart_ships_the_vineworkflow_and_kopf_peering_crds(
    chart: helm.Chart,
) -> None:
    names = set()
    for crd in chart.crds:
        for doc in yaml.safe_load_all(crd["data"]):
            names.add(doc["metadata"]["name"])
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert names == {
        "vineworkflows.kubevine.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def test_notes_tell_how_to_apply_and_watch_a_workflow(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)["kubevine/templates/NOTES.txt"]
    assert "kubectl get vw" in notes
    assert f"kubectl apply -n {NAMESPACE}" in notes
    assert "kind: VineWorkflow" in notes


# --- node cache keeper ---------------------------------------------------------------------


def keeper(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "DaemonSet")


def test_a_node_cache_keeper_prepares_each_watched_namespaces_folder_on_every_node(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["watch-namespaces"])
    daemonset = keeper(objects)
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["operator", "node-cache"]
    assert "--root=/node-cache" in container["args"]
    assert {"--namespace=physics", "--namespace=astro"} <= set(container["args"])
    (volume,) = [v for v in pod["volumes"] if "hostPath" in v]
    operator_env = {e["name"]: e.get("value") for e in operator_container(objects)["env"]}
    assert volume["hostPath"] == {
        "path": operator_env["KUBEVINE_OPERATOR_NODE_CACHE_ROOT"],
        "type": "DirectoryOrCreate",
    }
    assert f"--size-limit={operator_env['KUBEVINE_OPERATOR_NODE_CACHE_SIZE_LIMIT']}" in container["args"]
    assert pod["automountServiceAccountToken"] is False  # namespaced: it needs no API access


def test_the_keeper_is_the_only_root_container_and_has_only_the_capabilities_it_uses(
    chart: helm.Chart,
) -> None:
    daemonset = keeper(render(chart, {}))
    security = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["runAsUser"] == 0
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True


def test_a_cluster_wide_keeper_reads_vineworkflows_and_nothing_else(chart: helm.Chart) -> None:
    objects = render(chart, VARIATIONS["cluster-wide"])
    pod = keeper(objects)["spec"]["template"]["spec"]
    assert "--all-namespaces" in pod["containers"][0]["args"]
    role = next(
        o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "kv-kubevine-node-cache"
    )
    assert permissions(role) == {("kubevine.io", "vineworkflows"): {"list", "watch"}}
    assert pod["serviceAccountName"] == "kv-kubevine-node-cache"


@pytest.mark.parametrize(
    "values", [{"nodeCache": {"enabled": False}}, {"nodeCache": {"keeper": {"enabled": False}}}]
)
def test_no_keeper_without_the_node_cache_or_when_turned_off(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    assert "DaemonSet" not in kinds(render(chart, values))


def test_the_hep_variant_is_the_same_tag_with_a_suffix(chart: helm.Chart) -> None:
    objects = render(chart, {"image": {"variant": "hep", "tag": "1.2.0"}})
    assert operator_container(objects)["image"] == "ghcr.io/kubevine/kubevine:1.2.0-hep"
    env = {e["name"]: e.get("value") for e in operator_container(objects)["env"]}
    assert env["KUBEVINE_OPERATOR_DEFAULT_IMAGE"] == "ghcr.io/kubevine/kubevine:1.2.0-hep"


# --- helm test ---------------------------------------------------------------------------


def test_helm_test_asks_the_operators_metrics_service(chart: helm.Chart) -> None:
    objects = render(chart, {})
    tests = [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    (pod,) = tests
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    url = pod["spec"]["containers"][0]["env"][0]["value"]
    assert (
        url
        == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}/metrics"
    )
    compile(pod["spec"]["containers"][0]["args"][0], "helm-test", "exec")
    assert not [
        o
        for o in render(chart, VARIATIONS["operator-metrics-off"])
        if o["metadata"].get("annotations", {}).get("helm.sh/hook")
    ]


def test_the_chart_has_a_readme_that_names_every_top_level_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert f"`{key}" in readme, key
    for must in ("privileged", "kubectl apply --server-side", "helm test", "restricted"):
        assert must in readme, must
