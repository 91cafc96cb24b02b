"""A VineWorkflow spec is accepted with the CRD's defaults, or refused with a message that
names the field and the fix — what a user reads in the Valid=False condition."""

from __future__ import annotations

from typing import Any

import pytest

from kubevine.operator.spec import (
    SpecError,
    VineWorkflowSpec,
    parse_spec,
    validate_workflow_name,
)

MANAGED = {"stateStore": {"managed": True}}
EXTERNAL = {"stateStore": {"redisUrl": "redis://redis.db.svc:6379/0"}}


def problems_of(spec: Any) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    return str(caught.value)


def test_a_minimal_managed_spec_gets_every_default() -> None:
    spec = parse_spec(MANAGED)
    assert spec.image is None  # the operator's own image is used
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.manager.port == 9123
    assert spec.manager.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert spec.state_store.storage_size == "1Gi"
    workers = spec.workers
    assert (workers.min, workers.max, workers.cores, workers.memory) == (0, 4, 1, 2048)
    assert (workers.disk, workers.gpus, workers.idle_timeout_seconds) == (4096, 0, 60)
    assert workers.node_cache.enabled is True  # its folder is the operator's to choose, not the spec's
    assert spec.state_store.memory == "1Gi"
    assert spec.security.encrypt is True
    assert workers.automount_service_account_token is False
    assert spec.application is None
    assert spec.ttl_seconds_after_finished is None


def test_the_spec_round_trips_through_its_camel_case_form() -> None:
    source = {
        "image": "example.org/kubevine:1",
        "imagePullPolicy": "Always",
        "stateStore": {
            "redisUrl": "rediss://r.example.org:6380/2",
            "credentialsSecret": {"name": "redis-creds", "passwordKey": "pw"},
        },
        "workers": {
            "min": 1,
            "max": 8,
            "cores": 4,
            "memory": 8192,
            "gpus": 1,
            "idleTimeoutSeconds": 30,
            "nodeCache": {"enabled": False},
            "nodeSelector": {"pool": "batch"},
            "volumes": [{"name": "cvmfs", "persistentVolumeClaim": {"claimName": "cvmfs"}}],
            "volumeMounts": [{"name": "cvmfs", "mountPath": "/cvmfs"}],
            "envFrom": [{"secretRef": {"name": "grid"}, "prefix": "GRID_"}],
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "env": [{"name": "X", "value": "1"}],
        },
        "application": {"command": ["python", "-m", "analysis"], "args": ["--fast"]},
        "ttlSecondsAfterFinished": 600,
    }
    dumped = parse_spec(source).model_dump(by_alias=True, exclude_none=True)
    assert dumped["workers"]["nodeCache"] == {"enabled": False}
    assert dumped["workers"]["volumes"] == [
        {"name": "cvmfs", "persistentVolumeClaim": {"claimName": "cvmfs"}}
    ]
    assert dumped["stateStore"]["credentialsSecret"] == {
        "name": "redis-creds",
        "passwordKey": "pw",
    }
    assert parse_spec(dumped) == parse_spec(source)


def test_min_greater_than_max_is_refused_with_both_values() -> None:
    message = problems_of({**MANAGED, "workers": {"min": 5, "max": 2}})
    assert "workers.min must be less than or equal to workers.max" in message
    assert "min=5, max=2" in message


def test_min_zero_and_equal_bounds_are_accepted() -> None:
    assert parse_spec({**MANAGED, "workers": {"min": 0, "max": 0}}).workers.max == 0
    assert parse_spec({**MANAGED, "workers": {"min": 3, "max": 3}}).workers.min == 3


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("cores", -1, "greater than or equal to 1"),
        ("cores", 0, "greater than or equal to 1"),
        ("memory", 0, "greater than or equal to 1"),
        ("disk", -5, "greater than or equal to 0"),
        ("gpus", -1, "greater than or equal to 0"),
        ("min", -1, "greater than or equal to 0"),
        ("idleTimeoutSeconds", -10, "greater than or equal to 0"),
    ],
)
def test_negative_resources_are_refused_naming_the_field(field: str, value: int, bound: str) -> None:
    message = problems_of({**MANAGED, "workers": {field: value}})
    assert f"workers.{field}:" in message
    assert bound in message
    assert f"(got {value})" in message


def test_unknown_top_level_field_is_refused_and_the_allowed_ones_are_listed() -> None:
    message = problems_of({**MANAGED, "replicas": 3})
    assert "replicas: unknown field" in message
    assert "allowed: application, image, imagePullPolicy, manager, security, stateStore" in message


def test_unknown_nested_field_is_refused_with_its_path() -> None:
    message = problems_of({**MANAGED, "workers": {"nodeCache": {"enable": False}}})
    assert "workers.nodeCache.enable: unknown field" in message
    assert "enabled" in message  # the spelling the user meant is listed


def test_a_workflow_may_name_no_host_path() -> None:
    message = problems_of({**MANAGED, "workers": {"nodeCache": {"hostPath": "/etc"}}})
    assert "workers.nodeCache.hostPath: unknown field" in message
    message = problems_of(
        {**MANAGED, "manager": {"volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}]}}
    )
    assert "manager.volumes[0].hostPath: unknown field" in message
    assert "persistentVolumeClaim" in message


def test_unknown_field_inside_a_list_item_is_refused() -> None:
    message = problems_of({**MANAGED, "workers": {"env": [{"name": "A", "vaule": "1"}]}})
    assert "workers.env[0].vaule: unknown field" in message


def test_a_state_store_is_required() -> None:
    assert "stateStore: required field is missing" in problems_of({})


def test_neither_redis_url_nor_managed_is_refused() -> None:
    message = problems_of({"stateStore": {}})
    assert "stateStore needs redisUrl (or credentialsSecret.urlKey)" in message
    assert "managed: true" in message


def test_managed_store_with_a_url_is_refused() -> None:
    message = problems_of({"stateStore": {"managed": True, "redisUrl": "redis://x:6379"}})
    assert "a managed state store takes no redisUrl or credentialsSecret" in message


def test_the_url_given_twice_is_refused() -> None:
    spec = {
        "stateStore": {
            "redisUrl": "redis://x:6379",
            "credentialsSecret": {"name": "s", "urlKey": "url"},
        }
    }
    assert "give the Redis URL once" in problems_of(spec)


def test_a_url_from_the_credentials_secret_is_enough() -> None:
    spec = parse_spec({"stateStore": {"credentialsSecret": {"name": "s", "urlKey": "url"}}})
    assert spec.state_store.redis_url is None
    assert spec.state_store.credentials_secret is not None
    assert spec.state_store.credentials_secret.password_key == "password"


@pytest.mark.parametrize("url", ["http://x:6379", "redis://", "x"])
def test_a_redis_url_must_be_a_redis_scheme_url(url: str) -> None:
    assert "stateStore.redisUrl:" in problems_of({"stateStore": {"redisUrl": url}})


def test_strings_are_not_silently_coerced_to_integers() -> None:
    message = problems_of({**MANAGED, "workers": {"cores": "4"}})
    assert "workers.cores: Input should be a valid integer" in message


def test_a_bad_quantity_in_manager_resources_names_the_key() -> None:
    message = problems_of({**MANAGED, "manager": {"resources": {"limits": {"memory": "lots"}}}})
    assert "manager.resources.limits.memory: 'lots' is not a Kubernetes quantity" in message


def test_quantities_may_be_integers_or_strings() -> None:
    spec = parse_spec(
        {
            **MANAGED,
            "manager": {"resources": {"requests": {"cpu": 2, "memory": "512Mi"}}},
        }
    )
    assert spec.manager.resources.requests == {"cpu": 2, "memory": "512Mi"}


def test_the_manager_port_cannot_be_the_metrics_port() -> None:
    assert "manager.port must differ from 9090" in problems_of({**MANAGED, "manager": {"port": 9090}})


def test_a_privileged_manager_port_is_refused() -> None:
    assert "manager.port:" in problems_of({**MANAGED, "manager": {"port": 80}})


def test_an_env_entry_with_value_and_value_from_is_refused() -> None:
    env = [
        {
            "name": "A",
            "value": "1",
            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
        }
    ]
    message = problems_of({**MANAGED, "workers": {"env": env}})
    assert "workers.env[0]: an env entry has value or valueFrom, not both" in message


def test_value_from_needs_exactly_one_source() -> None:
    env = [{"name": "A", "valueFrom": {}}]
    message = problems_of({**MANAGED, "workers": {"env": env}})
    assert "exactly one of secretKeyRef, configMapKeyRef or fieldRef" in message


@pytest.mark.parametrize("name", ["KUBEVINE_TOKEN", "KUBEVINE_MANAGER", "KUBEVINE_NODE_NAME"])
def test_env_set_by_the_operator_cannot_be_overridden(name: str) -> None:
    message = problems_of({**MANAGED, "application": {"command": ["x"], "env": [{"name": name}]}})
    assert f"env {name} is set by the operator" in message


def test_an_application_needs_a_non_empty_command() -> None:
    assert "application.command: required field is missing" in problems_of(
        {**MANAGED, "application": {"args": ["x"]}}
    )
    assert "application.command:" in problems_of({**MANAGED, "application": {"command": []}})


def test_an_unknown_pull_policy_is_refused_with_the_choices() -> None:
    message = problems_of({**MANAGED, "imagePullPolicy": "Sometimes"})
    assert "imagePullPolicy:" in message
    assert "'Always', 'IfNotPresent' or 'Never'" in message


def test_a_negative_ttl_is_refused() -> None:
    assert "ttlSecondsAfterFinished:" in problems_of({**MANAGED, "ttlSecondsAfterFinished": -1})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**MANAGED, "bogus": 1, "workers": {"cores": 0, "gpus": -1}})
    assert len(caught.value.problems) == 3


def test_a_spec_that_is_not_an_object_is_refused() -> None:
    assert "spec must be an object, not list" in problems_of([1, 2])


def test_the_parsed_spec_is_immutable() -> None:
    spec = parse_spec(MANAGED)
    with pytest.raises(ValueError, match="frozen"):
        spec.workers.__setattr__("max", 10)
    assert isinstance(spec, VineWorkflowSpec)


@pytest.mark.parametrize("name", ["analysis", "a", "met-hist-2026", "x" * 40])
def test_workflow_names_that_fit_their_children_are_accepted(name: str) -> None:
    validate_workflow_name(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("x" * 41, "at most 40"),
        ("Analysis", "lowercase"),
        ("-a", "lowercase"),
        ("a.b", "lowercase"),
    ],
)
def test_workflow_names_that_would_break_child_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(SpecError, match=why):
        validate_workflow_name(name)


def test_a_quantity_of_the_wrong_type_gets_one_message() -> None:
    message = problems_of({**MANAGED, "manager": {"resources": {"requests": {"cpu": 1.5}}}})
    assert message.count("manager.resources.requests.cpu") == 1
    assert "must be an integer or a quantity string (got 1.5)" in message


def test_the_operator_folder_never_shadows_the_standard_library() -> None:
    """`operator/` is kubevine.operator (a regular package, mapped by pyproject); Python's own
    `operator` stays the standard module. (With the checkout's root on sys.path, see
    tests/structure/test_package_map.py.)"""
    import importlib.util
    import operator
    import sysconfig
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for folder in ("kubevine", "manager", "worker", "operator", "tests", "examples", "bench"):
        if (root / folder).is_dir():  # a file of that name on sys.path would win
            assert not list((root / folder).rglob("operator.py")), folder
    assert operator.__file__ is not None
    assert Path(operator.__file__).parent == Path(sysconfig.get_paths()["stdlib"])
    spec = importlib.util.find_spec("kubevine.operator")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve() == (root / "operator" / "__init__.py").resolve()
