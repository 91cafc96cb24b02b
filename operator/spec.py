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
#: DNS-1035 label: the workflow's Services are named after it, and a Service name must
#: start with a letter.
_WORKFLOW_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: A DNS-1123 label, what label values, ServiceAccount and Secret names must be at most.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

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
        "KUBEVINE_ENCRYPT",
        "KUBEVINE_CACHE_SIZE_MB",
        "KUBEVINE_LOG_FORMAT",
    }
)

#: Label keys the operator sets on every object (its selectors rely on them): a workflow's
#: own pod labels may not use them.
RESERVED_LABELS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/managed-by",
        "kubevine.io/workflow",
    }
)

#: Where the operator mounts its own volumes: a workflow's volumeMounts may not use these
#: paths or anything below them.
RESERVED_MOUNT_PATHS = ("/var/lib/kubevine", "/var/cache/kubevine", "/var/run/kubevine", "/tmp")

#: The volume types a workflow's pods may have: those of the Pod Security Standards'
#: *restricted* profile. No hostPath: the only host folder a workflow gets is its node cache,
#: under the root the operator (not the workflow) chooses.
VOLUME_SOURCES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
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


class FieldRef(_Model):
    """A field of the pod (the downward API), e.g. `metadata.name` or `spec.nodeName`."""

    field_path: str = Field(max_length=256)


class EnvVarSource(_Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None
    field_ref: FieldRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [s for s in (self.secret_key_ref, self.config_map_key_ref, self.field_ref) if s is not None]
        if len(given) != 1:
            raise ValueError("valueFrom takes exactly one of secretKeyRef, configMapKeyRef or fieldRef")
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


class LocalObjectReference(_Model):
    """A Secret in the workflow's namespace, by name (imagePullSecrets)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)


class EnvFromRef(_Model):
    """A whole Secret or ConfigMap as environment variables."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    optional: bool | None = None


class EnvFromSource(_Model):
    """One `envFrom` entry: every key of a Secret or ConfigMap, optionally prefixed."""

    prefix: str | None = Field(default=None, max_length=253)
    secret_ref: EnvFromRef | None = None
    config_map_ref: EnvFromRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("envFrom takes exactly one of secretRef or configMapRef")
        return self


class Volume(_Model):
    """A volume of a workflow's pods: a name and one source of the restricted profile's types
    (each source is the core/v1 type of that name, passed on as written)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    config_map: dict[str, Any] | None = None
    csi: dict[str, Any] | None = None
    downward_api: dict[str, Any] | None = Field(default=None, alias="downwardAPI")
    empty_dir: dict[str, Any] | None = None
    ephemeral: dict[str, Any] | None = None
    persistent_volume_claim: dict[str, Any] | None = None
    projected: dict[str, Any] | None = None
    secret: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [
            n for n, f in type(self).model_fields.items() if n != "name" and getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(f"volume {self.name!r} needs exactly one source of: {', '.join(VOLUME_SOURCES)}")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The core/v1 Volume."""
        return self.model_dump(by_alias=True, exclude_none=True)


class VolumeMount(_Model):
    """Where a container mounts one of the component's volumes."""

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    mount_path: str = Field(max_length=1024, pattern=r"^/(\S*[^/\s])?$")
    sub_path: str | None = Field(default=None, max_length=1024)
    read_only: bool | None = None

    @model_validator(mode="after")
    def _not_ours(self) -> Self:
        path = self.mount_path
        below = "/" if path == "/" else path + "/"
        for reserved in RESERVED_MOUNT_PATHS:
            if path == reserved or path.startswith(reserved + "/") or reserved.startswith(below):
                raise ValueError(
                    f"mountPath {self.mount_path} overlaps {reserved}, which the operator mounts"
                )
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The core/v1 VolumeMount."""
        return self.model_dump(by_alias=True, exclude_none=True)


class PodOptions(_Model):
    """What a site may need on the pods of one component (manager, workers or application):
    placement, identity, registries, extra volumes (CVMFS, grid proxies) and environment."""

    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    automount_service_account_token: bool = False
    image_pull_secrets: list[LocalObjectReference] | None = Field(default=None, max_length=16)
    pod_labels: dict[str, str] | None = None
    pod_annotations: dict[str, str] | None = None
    volumes: list[Volume] | None = Field(default=None, max_length=32)
    volume_mounts: list[VolumeMount] | None = Field(default=None, max_length=32)
    env: list[EnvVar] | None = Field(default=None, max_length=128)
    env_from: list[EnvFromSource] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        reserved = sorted(set(self.pod_labels or {}) & RESERVED_LABELS)
        if reserved:
            raise ValueError(
                f"podLabels may not set {', '.join(reserved)}: the operator's selectors use them"
            )
        names = [v.name for v in self.volumes or []]
        if len(set(names)) != len(names):
            raise ValueError("volume names must be unique")
        for mount in self.volume_mounts or []:
            if mount.name not in names:
                raise ValueError(f"volumeMount {mount.name!r} names no volume of this component")
        return self


def _default_manager_resources() -> ResourceRequirements:
    return ResourceRequirements(
        requests={"cpu": "500m", "memory": "1Gi"},
        limits={"memory": "4Gi"},
    )


class ManagerSpec(PodOptions):
    """The manager Deployment."""

    resources: ResourceRequirements = Field(default_factory=_default_manager_resources)
    port: int = Field(default=9123, ge=1024, le=65535)

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
    memory: str = Field(default="1Gi", pattern=SIZE_PATTERN)

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
    """Whether the worker pods of one node share that node's cache folder (the folder is the
    operator's to choose: `<cache root>/<namespace>`)."""

    enabled: bool = True


class WorkersSpec(PodOptions):
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

    @model_validator(mode="after")
    def _min_le_max(self) -> Self:
        if self.min > self.max:
            raise ValueError(
                f"workers.min must be less than or equal to workers.max (min={self.min}, max={self.max})"
            )
        return self


def _default_application_resources() -> ResourceRequirements:
    return ResourceRequirements(requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "2Gi"})


class ApplicationSpec(PodOptions):
    """A command run as a Job against the manager, once the manager is ready."""

    image: str | None = Field(default=None, max_length=512)
    command: list[str] = Field(min_length=1, max_length=64)
    args: list[str] | None = Field(default=None, max_length=256)
    resources: ResourceRequirements = Field(default_factory=_default_application_resources)
    backoff_limit: int = Field(default=2, ge=0, le=10)
    start_timeout_seconds: int = Field(default=900, ge=30, le=86400)


class SecuritySpec(_Model):
    """How the workflow's processes talk to each other."""

    encrypt: bool = True


class VineWorkflowSpec(_Model):
    """The whole `spec` of a VineWorkflow."""

    image: str | None = Field(default=None, max_length=512)
    image_pull_policy: PullPolicy = "IfNotPresent"
    manager: ManagerSpec = Field(default_factory=ManagerSpec)
    state_store: StateStoreSpec
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    application: ApplicationSpec | None = None
    security: SecuritySpec = Field(default_factory=SecuritySpec)
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
            f"metadata.name {name!r} must be lowercase letters, digits and '-', starting with a "
            "letter and ending with a letter or digit (it names the workflow's Services, DNS-1035)"
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
    "RESERVED_LABELS",
    "RESERVED_MOUNT_PATHS",
    "VOLUME_SOURCES",
    "ApplicationSpec",
    "CredentialsSecret",
    "EnvFromSource",
    "EnvVar",
    "EnvVarSource",
    "KeyRef",
    "ManagerSpec",
    "NodeCacheSpec",
    "PodOptions",
    "ResourceRequirements",
    "SecuritySpec",
    "SpecError",
    "StateStoreSpec",
    "Toleration",
    "VineWorkflowSpec",
    "Volume",
    "VolumeMount",
    "WorkersSpec",
    "parse_spec",
    "validate_workflow_name",
]
