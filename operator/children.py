"""Bring a VineWorkflow's fixed children into existence: token Secret, managed Redis,
manager Deployment and Service, application Job.

Exists to keep the create/resume/update handlers thin and the creation rules in one
place:

* **Idempotent.** Every child has a fixed name derived from the workflow's, so "create,
  and treat 409 AlreadyExists as done" is safe to repeat — after an operator restart, a
  handler retry, or with two operator replicas racing. Nothing is remembered in memory.
* **Adopted.** Each manifest goes through `kopf.adopt`, so it carries the workflow's
  owner reference (the builders set one already; adopt deduplicates it by uid) and is
  garbage-collected with the workflow.
* **The token is made once.** A fresh random token (and managed Redis password) is drawn
  only when the Secret does not exist yet; an existing Secret is never rewritten, so
  workers and clients holding the token keep working across operator restarts.
* **Spec updates reach what can change in place**: the manager Deployment and Service and
  the Redis StatefulSet and Service are merge-patched to the new manifests. The Secret
  and the application Job are immutable in practice and left alone.

Worker pods are not created here: the autoscaler owns them (`kubevine.operator.scaler`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import kopf

from kubevine.operator.kube import KubeApi
from kubevine.operator.manifests import Manifest, build_children
from kubevine.operator.naming import WorkflowRef
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import VineWorkflowSpec

#: Kinds whose objects are merge-patched to the new manifest when the spec changes.
PATCHABLE_KINDS = frozenset({"Deployment", "Service", "StatefulSet"})


def new_secret() -> str:
    """A random token or password (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def manifests(
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    settings: OperatorSettings,
    owner: kopf.Body,
) -> list[Manifest]:
    """The children to ensure, adopted by `owner`, with freshly drawn secrets (used only
    if the Secret does not exist yet)."""
    children = build_children(
        ref,
        spec,
        settings,
        token=new_secret(),
        redis_password=new_secret() if spec.state_store.managed else None,
    )
    kopf.adopt(children, owner=owner)
    return children


async def ensure(
    kube: KubeApi,
    ref: WorkflowRef,
    spec: VineWorkflowSpec,
    settings: OperatorSettings,
    owner: kopf.Body,
    *,
    update: bool = False,
) -> list[str]:
    """Create every missing child; with `update`, patch the patchable ones that exist.

    Returns "Kind/name" of each child created (or patched), in creation order.
    """
    changed: list[str] = []
    for manifest in manifests(ref, spec, settings, owner):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        existing, created = await kube.create_or_get(manifest)
        if created:
            changed.append(f"{kind}/{name}")
        elif update and kind in PATCHABLE_KINDS and _differs(manifest, existing):
            await kube.merge_patch(kind, ref.namespace, name, _patch_of(manifest))
            changed.append(f"{kind}/{name} (updated)")
    return changed


def _patch_of(manifest: Manifest) -> dict[str, Any]:
    """The part of a manifest a spec update may change: labels and spec."""
    return {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]}


def _differs(manifest: Manifest, existing: Mapping[str, Any]) -> bool:
    """Whether applying the manifest's spec would change the existing object."""
    return not _contained(manifest["spec"], existing.get("spec") or {})


def _contained(wanted: Any, actual: Any) -> bool:
    """Every field of `wanted` is in `actual` with the same value (the API server may have
    added defaults, which do not count as a difference)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(_contained(v, actual.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(_contained(w, a) for w, a in zip(wanted, actual))
        )
    return bool(wanted == actual)
