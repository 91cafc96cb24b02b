"""Operator-wide settings: what is the same for every VineWorkflow an operator runs.

Exists so that what the Helm chart configures (the default image, the Redis image, the
peering name, the autoscaler's pace) reaches the operator through one typed object
instead of scattered `os.environ` reads. `OperatorSettings.from_env(mapping)` is pure: the
caller passes `os.environ` (or a dict in tests). Each variable is named
`KUBEVINE_OPERATOR_<FIELD>`, the field name upper-cased; the chart's Deployment sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubevine.operator.quantity import SIZE_PATTERN

ENV_PREFIX = "KUBEVINE_OPERATOR_"


class SettingsError(ValueError):
    """An operator setting from the environment is malformed."""


class OperatorSettings(BaseModel):
    """Settings of one operator process (not of one workflow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_image: str = Field(
        default="ghcr.io/kubevine/kubevine:0.1.0",
        min_length=1,
        description="Image for workflows whose spec names none (the chart sets its own image).",
    )
    redis_image: str = Field(
        default="redis:7.4-alpine",
        min_length=1,
        description="Image of the Redis the operator runs for stateStore.managed workflows.",
    )
    peering_name: str = Field(
        default="kubevine",
        min_length=1,
        description="Name of the KopfPeering/ClusterKopfPeering object the replicas share.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Format of the operator's own log lines."
    )
    metrics_port: int = Field(
        default=9091,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus /metrics (0: not served).",
    )
    scale_interval_seconds: float = Field(default=5.0, gt=0, description="Period of the autoscaler timer.")
    stabilization_seconds: float = Field(
        default=60.0,
        ge=0,
        description="No scale-down within this long after a scale-up.",
    )
    max_create_per_step: int = Field(
        default=10, ge=1, description="Most worker pods created by one autoscaler step."
    )
    max_drain_per_step: int = Field(
        default=10, ge=1, description="Most workers drained by one autoscaler step."
    )
    stats_max_age_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Manager stats older than this are ignored (no scale-down on stale data).",
    )
    node_cache_enabled: bool = Field(
        default=True,
        description="Worker pods share a node cache folder (a hostPath: their namespace needs the "
        "privileged Pod Security level); false gives each worker a cache of its own (restricted).",
    )
    node_cache_root: str = Field(
        default="/var/lib/kubevine/cache",
        pattern=r"^/[^\s]*[^/\s]$",
        description="Folder on every node under which each namespace's node cache lives "
        "(<root>/<namespace>, prepared by the node-cache DaemonSet).",
    )
    node_cache_size_limit: str = Field(
        default="50Gi",
        pattern=SIZE_PATTERN,
        description="Bytes of node cache one node keeps in all (the DaemonSet evicts past it).",
    )
    resync_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often a workflow's token Secret is read to check it still exists "
        "(every other child is watched).",
    )
    failed_pod_retention_seconds: float = Field(
        default=600.0,
        ge=0,
        description="A failed worker pod is kept this long for `kubectl describe`/`logs`.",
    )
    failed_pods_kept: int = Field(default=5, ge=0, description="Most failed worker pods kept per workflow.")
    backoff_seconds: float = Field(
        default=5.0,
        gt=0,
        description="First delay before creating workers again after a failure; doubles each time.",
    )
    backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest such delay.")
    network_policy: bool = Field(
        default=False,
        description="Create a NetworkPolicy per workflow that admits only its own flows.",
    )
    pod_disruption_budgets: bool = Field(
        default=True,
        description="Create PodDisruptionBudgets so voluntary evictions never take the manager "
        "or the managed Redis down.",
    )
    namespace: str = Field(
        default="",
        description="The operator's own namespace (NetworkPolicies admit the operator from it; "
        "the chart sets it).",
    )
    service_account: str = Field(
        default="",
        description="The operator's own ServiceAccount: no workflow may run its pods as it.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorSettings:
        """Settings from `KUBEVINE_OPERATOR_*` variables; unset ones keep their defaults."""
        values = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            problems = "; ".join(
                f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in e.errors()
            )
            raise SettingsError(f"invalid operator settings: {problems}") from e

    @staticmethod
    def env_name(field: str) -> str:
        """The environment variable that sets `field`."""
        return ENV_PREFIX + field.upper()
