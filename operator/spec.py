"""The VineWorkflow spec as typed, validated models.

Exists so that the operator never works on a raw dict: `parse_spec` turns the custom
resource's `spec` into frozen pydantic models, or raises `SpecError` whose message tells
the user exactly what is wrong ("workers.min must be less than or equal to
workers.max", "workers.foo: unknown field (allowed: ...)").

The CRD (`charts/kubevine/crds/vineworkflows.kubevine.io.yaml`) is the single source of
truth; these models mirror it field for field, with the same defaults, bounds, enums and
cross-field rules. A structural-schema API server already prunes unknown fields and
applies defaults, but the operator validates again because (a) not every API server
enforces the schema (the test emulator does not), and (b) a spec must never reach the
manifest builders half-checked. `tests/chart/test_crd.py` fails when the two drift.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kubevine.operator.quantity import QUANTITY_PATTERN, SIZE_PATTERN, is_quantity

#: DNS-1123 subdomain, what Secret names must be.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Longest VineWorkflow name: its children are named `<name>-worker-<5 chars>` and the
#: StatefulSet controller appends a 10-character revision hash to `<name>-redis`, and
#: every one of those must stay a 63-character DNS label.
MAX_WORKFLOW_NAME = 40
_WORKFLOW_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

#: Environment variables the operator sets itself; a user may not override them.
RESERVED_ENV = frozenset(
    {
        "KUBEVINE_TOKEN",
        "KUBEVINE_MANAGER",
        "KUBEVINE_BIND_HOST",
        "KUBEVINE_NODE_NAME",
        "KUBEVINE_POD_NAME",
        "KUBEVINE_WORKER_ID",
        "KUBEVINE_REDIS_URL",
        "KUBEVINE_REDIS_PASSWORD",
    }
)

#: The manager's metrics/health port (fixed by the engine's CLI contract).
MANAGER_METRICS_PORT = 9090

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


def _quantity(value: int | str) -> int | str:
    if not is_quantity(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    return value


Quantity = Annotated[int | str, Field(union_mode="left_to_right"), AfterValidator(_quantity)]


class SpecError(ValueError):
    """A VineWorkflow spec the operator refuses; `str()` is the message for the user."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid VineWorkflow spec: " + "; ".join(problems))


class _Model(BaseModel):
    """Common configuration: camelCase names as in the CRD, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Toleration(_Model):
    """A pod toleration (the subset of core/v1 Toleration the CRD accepts)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class KeyRef(_Model):
    """One key of a Secret or ConfigMap."""

    name: str = Field(max_length=253)
    key: str = Field(max_length=253)
    optional: bool | None = None


class EnvVarSource(_Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("valueFrom takes exactly one of secretKeyRef or configMapKeyRef")
        return self


class EnvVar(_Model):
    """An extra environment variable for worker or application containers."""

    name: str = Field(max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_source(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("an env entry has value or valueFrom, not both")
        if self.name in RESERVED_ENV:
            raise ValueError(f"env {self.name} is set by the operator and cannot be overridden")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The core/v1 EnvVar."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ResourceRequirements(_Model):
    """Requests and limits of a container, as in core/v1 ResourceRequirements."""

    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None

    def to_k8s(self) -> dict[str, Any]:
        """The core/v1 ResourceRequirements."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _default_manager_resources() -> ResourceRequirements:
    return ResourceRequirements(
        requests={"cpu": "500m", "memory": "1Gi"},
        limits={"memory": "4Gi"},
    )


class ManagerSpec(_Model):
    """The manager Deployment."""

    resources: ResourceRequirements = Field(default_factory=_default_manager_resources)
    port: int = Field(default=9123, ge=1024, le=65535)
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _port_free(self) -> Self:
        if self.port == MANAGER_METRICS_PORT:
            raise ValueError(
                f"manager.port must differ from {MANAGER_METRICS_PORT}, the manager's metrics port"
            )
        return self


class CredentialsSecret(_Model):
    """A Secret holding an external Redis's password and, optionally, its URL."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    password_key: str = Field(default="password", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    url_key: str | None = Field(default=None, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class StateStoreSpec(_Model):
    """Where the manager keeps workflow state: an external Redis, or a managed one."""

    managed: bool = False
    redis_url: str | None = Field(default=None, max_length=2048, pattern=r"^rediss?://\S+$")
    credentials_secret: CredentialsSecret | None = None
    storage_size: str = Field(default="1Gi", pattern=SIZE_PATTERN)
    storage_class_name: str | None = Field(default=None, max_length=253)

    @model_validator(mode="after")
    def _one_store(self) -> Self:
        url_in_secret = self.credentials_secret is not None and (self.credentials_secret.url_key is not None)
        if self.managed and (self.redis_url is not None or self.credentials_secret is not None):
            raise ValueError("a managed state store takes no redisUrl or credentialsSecret")
        if not self.managed and self.redis_url is None and not url_in_secret:
            raise ValueError(
                "stateStore needs redisUrl (or credentialsSecret.urlKey) for an external "
                "Redis, or managed: true"
            )
        if self.redis_url is not None and url_in_secret:
            raise ValueError("give the Redis URL once: redisUrl or credentialsSecret.urlKey, not both")
        return self


class NodeCacheSpec(_Model):
    """The node-local cache directory shared by the worker pods of one node."""

    host_path: str = Field(default="/var/lib/kubevine/cache", max_length=1024, pattern=r"^/\S*$")
    size_limit: str = Field(default="50Gi", pattern=SIZE_PATTERN)
    init_permissions: bool = True


class WorkersSpec(_Model):
    """The autoscaled worker pool; sizes are per worker (memory and disk in MiB)."""

    min: int = Field(default=0, ge=0, le=10000)
    max: int = Field(default=4, ge=0, le=10000)
    cores: int = Field(default=1, ge=1, le=1024)
    memory: int = Field(default=2048, ge=1)
    disk: int = Field(default=4096, ge=0)
    gpus: int = Field(default=0, ge=0, le=64)
    idle_timeout_seconds: int = Field(default=60, ge=0, le=86400)
    drain_timeout_seconds: int = Field(default=600, ge=0, le=86400)
    node_cache: NodeCacheSpec = Field(default_factory=NodeCacheSpec)
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    env: list[EnvVar] | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _min_le_max(self) -> Self:
        if self.min > self.max:
            raise ValueError(
                f"workers.min must be less than or equal to workers.max (min={self.min}, max={self.max})"
            )
        return self


class ApplicationSpec(_Model):
    """A command run once as a Job against the manager."""

    image: str | None = Field(default=None, max_length=512)
    command: list[str] = Field(min_length=1, max_length=64)
    args: list[str] | None = Field(default=None, max_length=256)
    env: list[EnvVar] | None = Field(default=None, max_length=128)


class VineWorkflowSpec(_Model):
    """The whole `spec` of a VineWorkflow."""

    image: str | None = Field(default=None, max_length=512)
    image_pull_policy: PullPolicy = "IfNotPresent"
    manager: ManagerSpec = Field(default_factory=ManagerSpec)
    state_store: StateStoreSpec
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    application: ApplicationSpec | None = None
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)


def _loc_text(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in {"function-after", "function-before"} or part.startswith("function-"):
            continue
        else:
            text += f".{part}" if text else part
    return text


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside `X | None`, `list[X]`, or `X` itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The field names valid at the object that holds `loc`'s last element."""
    model: type[BaseModel] | None = VineWorkflowSpec
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if f.alias == part or n == part),
            None,
        )
        model = _unwrap_model(field.annotation) if field is not None else None
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    where = _loc_text(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_fields(loc))
        return f"{where}: unknown field (allowed: {allowed})"
    if kind == "missing":
        return f"{where}: required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return f"{where}: {message}" if where and not message.startswith(where) else message
    return f"{where}: {message} (got {error.get('input')!r})"


_UNION_TAGS = frozenset({"int", "str"})


def parse_spec(spec: Any) -> VineWorkflowSpec:
    """Validate a VineWorkflow's `spec` mapping; raise `SpecError` listing every problem."""
    if not isinstance(spec, dict):
        raise SpecError([f"spec must be an object, not {type(spec).__name__}"])
    try:
        return VineWorkflowSpec.model_validate(spec)
    except ValidationError as e:
        problems: list[str] = []
        for err in e.errors():
            loc = tuple(err["loc"])
            if loc and loc[-1] in _UNION_TAGS:  # `int | str` quantity: one message, not two
                text = f"{_loc_text(loc[:-1])}: must be an integer or a quantity string"
                text += f" (got {err.get('input')!r})"
            else:
                text = _describe(err)
            if text not in problems:
                problems.append(text)
        raise SpecError(problems) from e


def validate_workflow_name(name: str) -> None:
    """Raise `SpecError` unless `name` can prefix all the workflow's child objects."""
    problems = []
    if not _WORKFLOW_NAME_RE.match(name):
        problems.append(
            f"metadata.name {name!r} must be lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if len(name) > MAX_WORKFLOW_NAME:
        problems.append(
            f"metadata.name {name!r} is {len(name)} characters; at most {MAX_WORKFLOW_NAME} "
            "(the names of its pods and services derive from it)"
        )
    if problems:
        raise SpecError(problems)


__all__ = [
    "MANAGER_METRICS_PORT",
    "QUANTITY_PATTERN",
    "RESERVED_ENV",
    "ApplicationSpec",
    "CredentialsSecret",
    "EnvVar",
    "EnvVarSource",
    "KeyRef",
    "ManagerSpec",
    "NodeCacheSpec",
    "ResourceRequirements",
    "SpecError",
    "StateStoreSpec",
    "Toleration",
    "VineWorkflowSpec",
    "WorkersSpec",
    "parse_spec",
    "validate_workflow_name",
]
