"""The VineWorkflow CRD is the single source of truth: the operator's pydantic models must
accept exactly what the API server accepts, with the same defaults. These tests fail the
moment the two drift — a field renamed in one place, a default changed, an enum widened,
a CEL rule the operator does not enforce — and check that what the operator writes to
`status` fits the CRD's status schema."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from kubevine.operator.autoscale import ManagerStats, ScalingDecision, TaskCounts, WorkerLoad, WorkerPod
from kubevine.operator.spec import SpecError, VineWorkflowSpec, parse_spec, validate_workflow_name
from kubevine.operator.status import CONDITION_TYPES, Observed, compute_status

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "charts" / "kubevine" / "crds" / "vineworkflows.kubevine.io.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
VERSION = CRD["spec"]["versions"][0]
ROOT_SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA: dict[str, Any] = ROOT_SCHEMA["properties"]["spec"]
STATUS_SCHEMA: dict[str, Any] = ROOT_SCHEMA["properties"]["status"]
HAS_CEL = importlib.util.find_spec("celpy") is not None


# --- the CRD as the API server reads it --------------------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected (what pruning does silently)."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        if "properties" in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for child in node["properties"].values():
                walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"])

    walk(schema)
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: missing fields with a `default`
    get it, then defaulting continues inside every present field."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def transition(rule: str) -> bool:
    """A transition rule (it compares with `oldSelf`): evaluated on updates only."""
    return "oldSelf" in rule


def cel_rules(schema: dict[str, Any], value: Any, path: str = "spec") -> list[tuple[str, str, Any]]:
    """Every (path, rule, self) the API server would evaluate on `value` when it is created."""
    found = [
        (path, rule["rule"], value)
        for rule in schema.get("x-kubernetes-validations", [])
        if not transition(rule["rule"])
    ]
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name in value:
                found += cel_rules(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += cel_rules(schema["items"], item, f"{path}[{i}]")
    return found


def cel_holds(rule: str, this: Any, old: Any = None) -> bool:
    import celpy  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from celpy.adapter import json_to_cel  # type: ignore[import-not-found,import-untyped,unused-ignore]

    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": json_to_cel(this)}
    if old is not None:
        activation["oldSelf"] = json_to_cel(old)
    return bool(program.evaluate(activation))


def api_server_accepts(spec: dict[str, Any]) -> bool:
    defaulted = apply_defaults(SPEC_SCHEMA, spec)
    try:
        jsonschema.validate(defaulted, strict(SPEC_SCHEMA))
    except jsonschema.ValidationError:
        return False
    return all(cel_holds(rule, this) for _, rule, this in cel_rules(SPEC_SCHEMA, defaulted))


def operator_accepts(spec: dict[str, Any]) -> bool:
    try:
        parse_spec(spec)
    except SpecError:
        return False
    return True


# --- the CRD itself ----------------------------------------------------------------------


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(CRD, "1.32.0", strict=True)


def test_the_crd_names_the_api_the_operator_serves() -> None:
    assert CRD["metadata"]["name"] == "vineworkflows.kubevine.io"
    spec = CRD["spec"]
    assert (spec["group"], spec["scope"]) == ("kubevine.io", "Namespaced")
    assert spec["names"]["kind"] == "VineWorkflow"
    assert spec["names"]["shortNames"] == ["vw"]
    assert spec["names"]["categories"] == ["kubevine"]
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_kubectl_get_shows_phase_workers_done_waiting_and_age() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    default_columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert default_columns == ["Phase", "Workers", "Done", "Waiting", "Age"]
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] != "status":
            continue
        node = ROOT_SCHEMA
        for part in path:
            node = node["properties"][part]  # the column points at a real status field
        assert node["type"] == column["type"]


def test_the_schema_is_structural() -> None:
    """Every node has a type, except int-or-string and preserve-unknown-fields nodes."""

    def walk(node: dict[str, Any], where: str) -> None:
        special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or special, f"{where} has no type"
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}{{}}")

    walk(ROOT_SCHEMA, "")


def test_status_carries_the_fields_and_conditions_the_operator_writes() -> None:
    properties = STATUS_SCHEMA["properties"]
    assert set(properties["workers"]["properties"]) >= {"desired", "pending", "connected"}
    assert set(properties["tasks"]["properties"]) == {"waiting", "running", "done", "failed"}
    assert set(properties["lastScaling"]["properties"]) == {"time", "from", "to", "reason"}
    condition_types = properties["conditions"]["items"]["properties"]["type"]["enum"]
    assert tuple(condition_types) == CONDITION_TYPES
    assert properties["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


# --- the operator's models agree with the CRD --------------------------------------------


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(_resolve(options[0], defs))
            return merged
    return node


def _int_or_string(node: dict[str, Any]) -> bool:
    types = {o.get("type") for o in node.get("anyOf", [])}
    return types == {"integer", "string"}


def compare(crd: dict[str, Any], model: dict[str, Any], defs: dict[str, Any], where: str) -> list[str]:
    """Differences between a CRD schema node and the pydantic JSON schema node."""
    model = _resolve(model, defs)
    drift: list[str] = []
    if crd.get("x-kubernetes-int-or-string") or _int_or_string(crd):
        if not _int_or_string(model):
            drift.append(f"{where}: int-or-string in the CRD, not in the model")
        return drift
    if crd.get("type") != model.get("type"):
        drift.append(f"{where}: type {crd.get('type')} in the CRD, {model.get('type')} in the model")
        return drift
    for key in ("enum", "minimum", "maximum", "pattern", "maxLength", "minLength", "minItems", "maxItems"):
        if crd.get(key) != model.get(key):
            drift.append(f"{where}: {key} {crd.get(key)!r} in the CRD, {model.get(key)!r} in the model")
    crd_default = crd.get("default")
    if crd_default is not None and not isinstance(crd_default, dict) and crd_default != model.get("default"):
        drift.append(f"{where}: default {crd_default!r} in the CRD, {model.get('default')!r} in the model")
    if crd_default is None and model.get("default") is not None:
        drift.append(f"{where}: default {model.get('default')!r} in the model only")
    if crd.get("type") == "object" and "properties" in crd:
        crd_props, model_props = crd["properties"], model.get("properties", {})
        for name in sorted(set(crd_props) ^ set(model_props)):
            side = "CRD" if name in crd_props else "model"
            drift.append(f"{where}.{name}: only in the {side}")
        if sorted(crd.get("required", [])) != sorted(model.get("required", [])):
            drift.append(
                f"{where}: required {crd.get('required')} in the CRD, {model.get('required')} in the model"
            )
        for name in sorted(set(crd_props) & set(model_props)):
            drift += compare(crd_props[name], model_props[name], defs, f"{where}.{name}")
    elif crd.get("type") == "object" and isinstance(crd.get("additionalProperties"), dict):
        drift += compare(
            crd["additionalProperties"], model.get("additionalProperties", {}), defs, f"{where}{{}}"
        )
    elif crd.get("type") == "array":
        drift += compare(crd["items"], model.get("items", {}), defs, f"{where}[]")
    return drift


def test_the_operator_model_has_the_crds_fields_types_bounds_enums_and_defaults() -> None:
    model = VineWorkflowSpec.model_json_schema(by_alias=True)
    assert compare(SPEC_SCHEMA, model, model.get("$defs", {}), "spec") == []


def test_the_drift_check_notices_a_drifted_default() -> None:
    model = VineWorkflowSpec.model_json_schema(by_alias=True)
    drifted = copy.deepcopy(SPEC_SCHEMA)
    drifted["properties"]["workers"]["properties"]["max"]["default"] = 5
    drifted["properties"]["workers"]["properties"]["extra"] = {"type": "string"}
    drift = compare(drifted, model, model["$defs"], "spec")
    assert "spec.workers.max: default 5 in the CRD, 4 in the model" in drift
    assert "spec.workers.extra: only in the CRD" in drift


SPECS_FOR_DEFAULTS: list[dict[str, Any]] = [
    {"stateStore": {"managed": True}},
    {"stateStore": {"redisUrl": "redis://r:6379"}, "workers": {}, "manager": {}},
    {"stateStore": {"managed": True}, "workers": {"nodeCache": {"enabled": False}}},
    {"stateStore": {"managed": True, "memory": "2Gi"}, "security": {"encrypt": False}},
    {
        "stateStore": {"managed": True},
        "application": {"command": ["a"], "backoffLimit": 0, "env": [{"name": "A", "value": "1"}]},
        "workers": {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
        },
    },
    {"stateStore": {"managed": True}, "manager": {"port": 10000, "resources": {"requests": {"cpu": 1}}}},
    {"stateStore": {"credentialsSecret": {"name": "s", "urlKey": "u"}}, "application": {"command": ["a"]}},
]


@pytest.mark.parametrize("spec", SPECS_FOR_DEFAULTS)
def test_the_api_servers_defaults_equal_the_operators(spec: dict[str, Any]) -> None:
    from_api_server = apply_defaults(SPEC_SCHEMA, spec)
    from_operator = parse_spec(spec).model_dump(by_alias=True, exclude_none=True)
    assert from_api_server == from_operator


AGREEMENT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("managed", {"stateStore": {"managed": True}}),
    ("external", {"stateStore": {"redisUrl": "redis://r:6379/0"}}),
    ("url in secret", {"stateStore": {"credentialsSecret": {"name": "s", "urlKey": "url"}}}),
    ("no store", {}),
    ("empty store", {"stateStore": {}}),
    ("managed and url", {"stateStore": {"managed": True, "redisUrl": "redis://r:6379"}}),
    ("managed and secret", {"stateStore": {"managed": True, "credentialsSecret": {"name": "s"}}}),
    (
        "url twice",
        {"stateStore": {"redisUrl": "redis://r", "credentialsSecret": {"name": "s", "urlKey": "u"}}},
    ),
    ("secret without url", {"stateStore": {"credentialsSecret": {"name": "s"}}}),
    ("bad scheme", {"stateStore": {"redisUrl": "http://r:6379"}}),
    ("min > max", {"stateStore": {"managed": True}, "workers": {"min": 5, "max": 2}}),
    ("min > default max", {"stateStore": {"managed": True}, "workers": {"min": 5}}),
    ("min = max = 0", {"stateStore": {"managed": True}, "workers": {"min": 0, "max": 0}}),
    ("negative cores", {"stateStore": {"managed": True}, "workers": {"cores": -1}}),
    ("zero memory", {"stateStore": {"managed": True}, "workers": {"memory": 0}}),
    ("negative gpus", {"stateStore": {"managed": True}, "workers": {"gpus": -1}}),
    ("unknown field", {"stateStore": {"managed": True}, "replicas": 3}),
    ("unknown nested", {"stateStore": {"managed": True}, "workers": {"nodeCache": {"size": "1Gi"}}}),
    ("string integer", {"stateStore": {"managed": True}, "workers": {"cores": "2"}}),
    ("bad pull policy", {"stateStore": {"managed": True}, "imagePullPolicy": "Sometimes"}),
    ("metrics port", {"stateStore": {"managed": True}, "manager": {"port": 9090}}),
    ("low port", {"stateStore": {"managed": True}, "manager": {"port": 80}}),
    ("bad quantity", {"stateStore": {"managed": True}, "manager": {"resources": {"limits": {"cpu": "x"}}}}),
    ("good quantity", {"stateStore": {"managed": True}, "manager": {"resources": {"limits": {"cpu": 2}}}}),
    ("bad size", {"stateStore": {"managed": True, "storageSize": "lots"}}),
    (
        "a workflow names no host path",
        {"stateStore": {"managed": True}, "workers": {"nodeCache": {"hostPath": "/etc"}}},
    ),
    (
        "a hostPath volume",
        {
            "stateStore": {"managed": True},
            "workers": {"volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}]},
        },
    ),
    ("a volume with no source", {"stateStore": {"managed": True}, "manager": {"volumes": [{"name": "v"}]}}),
    (
        "a volume with two sources",
        {
            "stateStore": {"managed": True},
            "manager": {"volumes": [{"name": "v", "emptyDir": {}, "secret": {}}]},
        },
    ),
    (
        "two volumes of one name",
        {"stateStore": {"managed": True}, "manager": {"volumes": [{"name": "v", "emptyDir": {}}] * 2}},
    ),
    (
        "a CVMFS claim",
        {
            "stateStore": {"managed": True},
            "workers": {
                "volumes": [{"name": "cvmfs", "persistentVolumeClaim": {"claimName": "cvmfs"}}],
                "volumeMounts": [{"name": "cvmfs", "mountPath": "/cvmfs", "readOnly": True}],
            },
        },
    ),
    (
        "a mount of no volume",
        {
            "stateStore": {"managed": True},
            "application": {"command": ["a"], "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
        },
    ),
    (
        "a mount over the workdir",
        {
            "stateStore": {"managed": True},
            "workers": {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/var/lib/kubevine/work/x"}],
            },
        },
    ),
    (
        "a mount above the cache",
        {
            "stateStore": {"managed": True},
            "workers": {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/var"}],
            },
        },
    ),
    (
        "a mount at the root",
        {
            "stateStore": {"managed": True},
            "workers": {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/"}],
            },
        },
    ),
    (
        "a reserved pod label",
        {"stateStore": {"managed": True}, "workers": {"podLabels": {"kubevine.io/workflow": "x"}}},
    ),
    ("own pod labels", {"stateStore": {"managed": True}, "workers": {"podLabels": {"team": "cms"}}}),
    ("envFrom of nothing", {"stateStore": {"managed": True}, "manager": {"envFrom": [{"prefix": "X_"}]}}),
    (
        "envFrom of both",
        {
            "stateStore": {"managed": True},
            "manager": {"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]},
        },
    ),
    (
        "env from a field",
        {
            "stateStore": {"managed": True},
            "workers": {"env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]},
        },
    ),
    (
        "env from a field and a secret",
        {
            "stateStore": {"managed": True},
            "workers": {
                "env": [
                    {
                        "name": "N",
                        "valueFrom": {
                            "fieldRef": {"fieldPath": "x"},
                            "secretKeyRef": {"name": "s", "key": "k"},
                        },
                    }
                ]
            },
        },
    ),
    ("a bad priority class", {"stateStore": {"managed": True}, "workers": {"priorityClassName": "High"}}),
    (
        "app backoff too high",
        {"stateStore": {"managed": True}, "application": {"command": ["a"], "backoffLimit": 11}},
    ),
    ("bad redis memory", {"stateStore": {"managed": True, "memory": "lots"}}),
    (
        "env value and from",
        {
            "stateStore": {"managed": True},
            "workers": {
                "env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
            },
        },
    ),
    (
        "env from nothing",
        {"stateStore": {"managed": True}, "workers": {"env": [{"name": "A", "valueFrom": {}}]}},
    ),
    ("env bad name", {"stateStore": {"managed": True}, "workers": {"env": [{"name": "1 A"}]}}),
    ("app without command", {"stateStore": {"managed": True}, "application": {"args": ["x"]}}),
    ("app empty command", {"stateStore": {"managed": True}, "application": {"command": []}}),
    ("negative ttl", {"stateStore": {"managed": True}, "ttlSecondsAfterFinished": -1}),
    (
        "bad toleration",
        {"stateStore": {"managed": True}, "workers": {"tolerations": [{"operator": "Maybe"}]}},
    ),
]


@pytest.mark.skipif(not HAS_CEL, reason="needs cel-python to evaluate the CRD's CEL rules")
@pytest.mark.parametrize(("case", "spec"), AGREEMENT_CASES, ids=[c for c, _ in AGREEMENT_CASES])
def test_the_operator_accepts_exactly_what_the_api_server_accepts(case: str, spec: dict[str, Any]) -> None:
    assert operator_accepts(spec) == api_server_accepts(spec), case


def test_the_agreement_cases_cover_every_cel_rule() -> None:
    """Each CEL rule of the CRD is made to fail by at least one case above."""
    rules: set[str] = set()

    def collect(node: dict[str, Any]) -> None:
        rules.update(r["rule"] for r in node.get("x-kubernetes-validations", []))
        for child in node.get("properties", {}).values():
            collect(child)
        if isinstance(node.get("items"), dict):
            collect(node["items"])

    collect(SPEC_SCHEMA)
    creation = {r for r in rules if not transition(r)}
    assert len(creation) == 13
    if not HAS_CEL:
        pytest.skip("needs cel-python")
    failing: set[str] = set()
    for _, spec in AGREEMENT_CASES:
        defaulted = apply_defaults(SPEC_SCHEMA, spec)
        for _, rule, this in cel_rules(SPEC_SCHEMA, defaulted):
            if not cel_holds(rule, this):
                failing.add(rule)
    assert failing == creation


@pytest.mark.skipif(not HAS_CEL, reason="needs cel-python to evaluate the CRD's CEL rules")
@pytest.mark.parametrize("name", ["a", "x" * 40, "x" * 41, "y" * 60, "1analysis", "a1", "9", "ab-", "a-b"])
def test_the_workflow_name_rules_are_the_same_in_the_crd_and_the_operator(name: str) -> None:
    try:
        validate_workflow_name(name)
        operator_ok = True
    except SpecError:
        operator_ok = False
    rules = ROOT_SCHEMA["x-kubernetes-validations"]
    assert all(cel_holds(r["rule"], {"metadata": {"name": name}}) for r in rules) == operator_ok


def test_a_name_starting_with_a_digit_is_refused_with_why() -> None:
    with pytest.raises(SpecError, match="starting with a letter"):
        validate_workflow_name("2024-run")


STATE_STORE_SCHEMA = SPEC_SCHEMA["properties"]["stateStore"]
IMMUTABLE_CHANGES = [
    ({"managed": True}, {"managed": True, "storageSize": "5Gi"}, "storageSize"),
    (
        {"managed": True, "storageClassName": "a"},
        {"managed": True, "storageClassName": "b"},
        "storageClassName",
    ),
    ({"managed": True}, {"managed": True, "storageClassName": "b"}, "storageClassName"),
    ({"managed": True}, {"redisUrl": "redis://r"}, "managed"),
]


@pytest.mark.skipif(not HAS_CEL, reason="needs cel-python to evaluate the CRD's CEL rules")
@pytest.mark.parametrize(("old", "new", "field"), IMMUTABLE_CHANGES)
def test_what_the_managed_redis_was_made_with_cannot_change(
    old: dict[str, Any], new: dict[str, Any], field: str
) -> None:
    rules = [r for r in STATE_STORE_SCHEMA["x-kubernetes-validations"] if transition(r["rule"])]
    before, after = apply_defaults(STATE_STORE_SCHEMA, old), apply_defaults(STATE_STORE_SCHEMA, new)
    broken = [r["message"] for r in rules if not cel_holds(r["rule"], after, before)]
    assert len(broken) == 1 and field in broken[0], broken
    assert all(cel_holds(r["rule"], after, after) for r in rules)  # an unchanged store passes
    assert all(cel_holds(r["rule"], {**after, "memory": "3Gi"}, after) for r in rules)  # memory may change


# --- status ------------------------------------------------------------------------------


def test_the_status_the_operator_writes_fits_the_crd() -> None:
    now = 1_767_323_045.0
    stats = ManagerStats(
        time=now,
        workers=[WorkerLoad(id="1", pod="wf-worker-a", running_tasks=2)],
        tasks=TaskCounts(waiting=3, running=2, done=10, failed=1),
    )
    decision = ScalingDecision(
        desired=2, create=1, drain=[], delete=[], reason="scale up 1→2", current=1, target=2
    )
    schema = strict(STATUS_SCHEMA)
    observations = [
        Observed(generation=1, spec_error="workers.min must be less than or equal to workers.max"),
        Observed(generation=1, state_store_ready=False),
        Observed(
            generation=2,
            has_application=True,
            manager_available=True,
            pods=[WorkerPod(name="wf-worker-a", phase="Running", created=now)],
            stats=stats,
            decision=decision,
            job="Failed",
        ),
    ]
    previous = None
    for observed in observations:
        status = compute_status(observed, previous, now)
        jsonschema.validate(status, schema, format_checker=jsonschema.FormatChecker())
        previous = status


# --- examples ----------------------------------------------------------------------------

EXAMPLES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))


def test_there_are_examples_for_a_pool_and_for_an_application() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"workflow.yaml", "workflow-app.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_a_valid_vineworkflow(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    workflows = [d for d in documents if d.get("kind") == "VineWorkflow"]
    assert workflows
    for workflow in workflows:
        assert workflow["apiVersion"] == "kubevine.io/v1alpha1"
        validate_workflow_name(workflow["metadata"]["name"])
        parse_spec(workflow["spec"])
        jsonschema.validate(apply_defaults(ROOT_SCHEMA, workflow), strict(ROOT_SCHEMA))
        if HAS_CEL:
            assert api_server_accepts(workflow["spec"])
        application = workflow["spec"].get("application") or {}
        if application.get("command", [])[-1:] == ["-c"]:  # an inline Python script
            compile(application["args"][0], f"{path.name}:application", "exec")
    for other in documents:
        if other.get("kind") != "VineWorkflow":
            kubernetes_validate.validate(other, "1.32.0", strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_examples_name_no_image_so_they_follow_the_charts(path: Path) -> None:
    """A workflow without `image` runs the operator's default, which the chart sets from its
    `image.repository` and `image.tag`: the examples run whatever image the chart installed."""
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "VineWorkflow":
            assert "image" not in document["spec"]
            assert "image" not in (document["spec"].get("application") or {})


def test_the_docs_reference_every_spec_field() -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    # Kubernetes types, documented as such
    opaque = {
        "resources",
        "nodeSelector",
        "tolerations",
        "env",
        "envFrom",
        "imagePullSecrets",
        "volumes",
        "volumeMounts",
        "affinity",
        "podLabels",
        "podAnnotations",
    }

    def paths(node: dict[str, Any], prefix: str) -> list[str]:
        found = []
        for name, child in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            if "properties" in child and name not in opaque:
                found += paths(child, path)
            else:
                found.append(path)
        return found

    missing = [p for p in paths(SPEC_SCHEMA, "") if f"`{p}`" not in docs]
    assert missing == []
