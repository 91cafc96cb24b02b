"""Keep a VineWorkflow's fixed children in existence and up to date: token Secret, managed
Redis, manager Deployment and Service, application Job, PodDisruptionBudgets, NetworkPolicies.

Exists to keep the handlers thin and the rules of creation and repair in one place. It runs
when a workflow is created, resumed or changed, and again on every autoscaler step, so that
whatever happened to a child in between is repaired within one step:

* **Level-triggered.** Each step compares what the watches show (`cache.Children`) with the
  manifests the spec asks for. A child that is missing is created (a deleted manager
  Deployment, Service or PDB comes back within a step); a child whose manifest changed is
  patched. Comparing costs no API call, so a workflow at rest costs none.
* **Patched only when the operator's manifest changed.** Each child carries the hash of the
  manifest last applied (`kubevine.io/applied`); the API server's defaults and normalised
  quantities never look like drift, and a step patches only after a spec change (or an
  operator upgrade that builds different manifests).
* **Immutable fields are never patched.** A StatefulSet's `volumeClaimTemplates`, selector and
  service name cannot change (the CRD's CEL rules also refuse to change `stateStore.storageSize`
  and `storageClassName`), so only its template is patched; a Job is never patched. A call
  that fails anyway is retried with a back-off and reported, never every step.
* **The token is made once and kept.** The Secret is created with a fresh random token when
  it does not exist. It is not watched (the operator may read only the Secrets it names), so
  its existence is checked every `resync_seconds`; a deleted Secret is recreated with the
  token the running manager and workers hold (remembered from the first step), so they keep
  working.
* **Adopted.** Each manifest goes through `kopf.adopt`, so it carries the workflow's owner
  reference and is garbage-collected with it.

Worker pods are not created here: the autoscaler owns them (`kubevine.operator.scaler`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from kubevine.operator.cache import Children, Expectations
from kubevine.operator.kube import KubeApi, KubeError
from kubevine.operator.manifests import Manifest, build_children
from kubevine.operator.naming import ANNOTATION_APPLIED, WorkflowRef, token_secret_name
from kubevine.operator.podparts import TOKEN_KEY
from kubevine.operator.problems import Problem
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec

#: Kinds whose objects are patched to the new manifest when it changes.
PATCHABLE_KINDS = frozenset({"Deployment", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"})
#: What of a StatefulSet's spec may change in place.
STATEFULSET_MUTABLE = ("replicas", "template", "persistentVolumeClaimRetentionPolicy", "updateStrategy")


def new_secret() -> str:
    """A random token or password (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """A short hash of what the operator wants of a child (labels, annotations but its own,
    spec), stable across runs."""
    meta = manifest.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION_APPLIED}
    wanted = {"labels": meta.get("labels"), "annotations": annotations, "spec": manifest.get("spec")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def stamped(manifest: Manifest) -> Manifest:
    """The manifest with its `kubevine.io/applied` hash."""
    meta = manifest.setdefault("metadata", {})
    meta.setdefault("annotations", {})[ANNOTATION_APPLIED] = applied_hash(manifest)
    return manifest


@dataclass
class Repairs:
    """What one workflow's children needed, kept between steps by the operator process."""

    seen: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) the watches showed
    expectations: Expectations = field(default_factory=Expectations)
    failures: dict[tuple[str, str], tuple[int, float, str]] = field(
        default_factory=dict
    )  # -> (n, until, why)
    secret_checked: float = 0.0


@dataclass
class Outcome:
    """What `ensure` did: children created (first time), recreated, patched; what failed."""

    created: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rotated: bool = False  # the token Secret came back with new values: its users must restart

    @property
    def changed(self) -> bool:
        return bool(self.created or self.recreated or self.patched)


def manifests(
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    settings: OperatorSettings,
    owner: Mapping[str, Any],
    secret_data: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """The children to ensure, adopted by `owner` and stamped. The token Secret holds
    `secret_data` (what the Secret held when it was last read) or freshly drawn values,
    used only if the Secret does not exist."""
    children = build_children(
        ref,
        spec,
        settings,
        token=new_secret(),
        redis_password=new_secret() if spec.state_store.managed else None,
    )
    kopf.adopt(children, owner=cast(kopf.Body, owner))
    for child in children:
        if child["kind"] == "Secret" and secret_data:
            child["data"] = dict(secret_data)
    return [stamped(c) if c["kind"] != "Secret" else c for c in children]


async def ensure(
    kube: KubeApi,
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    settings: OperatorSettings,
    owner: Mapping[str, Any],
    children: Children,
    repairs: Repairs,
    now: float,
    *,
    start_application: bool,
    secret_data: Mapping[str, str] | None = None,
) -> Outcome:
    """Create what is missing, patch what changed; `start_application` says whether the
    application Job may be created now (the manager is ready and the workflow not finished)."""
    outcome = Outcome()
    children = repairs.expectations.apply(children, now)
    for manifest in manifests(ref, spec, settings, owner, secret_data):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Job" and not start_application:
            continue
        key = (kind, name)
        failed = repairs.failures.get(key)
        if failed is not None and failed[1] > now:
            outcome.problems.append(Problem("workflow", "ReconcileFailed", failed[2]))
            continue
        try:
            if kind == "Secret":
                await _ensure_secret(kube, ref, manifest, repairs, now, settings, outcome, bool(secret_data))
            else:
                await _ensure_one(kube, ref, manifest, children, repairs, now, outcome)
        except KubeError as e:
            if e.namespace_terminating:  # nothing to repair: the namespace and all in it are going
                raise
            count = (failed[0] if failed else 0) + 1
            delay = min(settings.backoff_max_seconds, settings.backoff_seconds * 2 ** min(count - 1, 30))
            why = f"{kind}/{name}: {e} (next attempt in {delay:.0f}s)"
            repairs.failures[key] = (count, now + delay, why)
            outcome.problems.append(Problem("workflow", "ReconcileFailed", why))
        else:
            repairs.failures.pop(key, None)
    return outcome


async def _ensure_one(
    kube: KubeApi,
    ref: WorkflowRef,
    manifest: Manifest,
    children: Children,
    repairs: Repairs,
    now: float,
    outcome: Outcome,
) -> None:
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    existing = children.get(kind, name)
    if existing is not None:
        repairs.seen.add((kind, name))
        wanted = manifest["metadata"]["annotations"][ANNOTATION_APPLIED]
        applied = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED)
        if kind in PATCHABLE_KINDS and applied != wanted and existing["metadata"].get("uid"):
            await kube.merge_patch(kind, ref.namespace, name, _patch_of(manifest))
            outcome.patched.append(f"{kind}/{name}")
        return
    obj, created = await kube.create_if_missing(manifest)
    repairs.expectations.expect_created(obj if obj.get("metadata") else manifest, now)
    if not created:
        return
    if (kind, name) in repairs.seen:
        outcome.recreated.append(f"{kind}/{name}")
    else:
        outcome.created.append(f"{kind}/{name}")
    repairs.seen.add((kind, name))


async def _ensure_secret(
    kube: KubeApi,
    ref: WorkflowRef,
    manifest: Manifest,
    repairs: Repairs,
    now: float,
    settings: OperatorSettings,
    outcome: Outcome,
    known: bool,
) -> None:
    """The token Secret: created once; checked every `resync_seconds` (it is not watched).
    Recreated with the values it held when `known`, else with new ones (`outcome.rotated`)."""
    name = manifest["metadata"]["name"]
    if repairs.secret_checked and now - repairs.secret_checked < settings.resync_seconds:
        return
    existing = await kube.get("Secret", ref.namespace, name)
    if existing is not None:
        repairs.secret_checked = now
        repairs.seen.add(("Secret", name))
        return
    _, created = await kube.create_if_missing(manifest)
    # Only now: a refused create is retried with the back-off, not after `resync_seconds`.
    repairs.secret_checked = now
    if created:
        again = ("Secret", name) in repairs.seen
        (outcome.recreated if again else outcome.created).append(f"Secret/{name}")
        outcome.rotated = again and not known
        repairs.seen.add(("Secret", name))


def _patch_of(manifest: Manifest) -> dict[str, Any]:
    """The part of a manifest that may change in place: labels, annotations, the spec (for a
    StatefulSet only its mutable fields)."""
    spec = dict(manifest["spec"])
    if manifest["kind"] == "StatefulSet":
        spec = {k: v for k, v in spec.items() if k in STATEFULSET_MUTABLE}
    meta = manifest["metadata"]
    return {
        "metadata": {"labels": meta["labels"], "annotations": meta.get("annotations") or {}},
        "spec": spec,
    }


def token_of(secret_data: Mapping[str, str] | None) -> str | None:
    """The workflow token in a token Secret's `data`, if any."""
    encoded = (secret_data or {}).get(TOKEN_KEY)
    return base64.b64decode(encoded).decode() if encoded else None


__all__ = ["Outcome", "Repairs", "ensure", "manifests", "new_secret", "token_of", "token_secret_name"]
