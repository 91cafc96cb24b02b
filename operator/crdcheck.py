"""Refuse to start against a VineWorkflow CRD older than this operator.

Exists because Helm installs the CRDs of `crds/` once and never upgrades them: after a
`helm upgrade`, the cluster may still serve the old schema. An API server prunes the fields
its schema does not know, so a new operator on an old CRD would lose, silently, every new
spec field a user sets and every new status field it writes. The operator therefore reads
the schema the API server publishes (OpenAPI v3, which every authenticated client may read:
no extra permission) and compares it with its own models before it starts; a field it needs
and the cluster lacks stops it with the command that upgrades the CRD.

`missing_fields` is pure (two schemas in, field paths out); `check` does the one read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from kubevine.operator.kube import KubeApi, KubeError
from kubevine.operator.naming import GROUP, KIND, VERSION
from kubevine.operator.spec import VineWorkflowSpec

#: The status fields the operator writes (pruned silently by a CRD that lacks them).
STATUS_FIELDS = (
    "phase",
    "message",
    "observedGeneration",
    "conditions",
    "workers",
    "tasks",
    "lastScaling",
    "problems",
)
UPGRADE = "kubectl apply --server-side --force-conflicts -f charts/kubevine/crds/"


class CrdError(RuntimeError):
    """The cluster's VineWorkflow CRD cannot serve this operator; the message says what to do."""


def _paths(schema: Mapping[str, Any], defs: Mapping[str, Any], prefix: str) -> Iterator[str]:
    """Dotted paths of every declared property, through objects and lists (not into maps or
    free-form objects, whose keys are the user's)."""
    if "$ref" in schema:
        schema = defs[str(schema["$ref"]).rsplit("/", 1)[1]]
    for option in schema.get("anyOf") or []:
        if option.get("type") != "null":
            yield from _paths(option, defs, prefix)
    if isinstance(schema.get("items"), Mapping):
        yield from _paths(schema["items"], defs, prefix + "[]")
    for name, child in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        yield path
        yield from _paths(child, defs, path)


def required_paths() -> set[str]:
    """Every spec field of this operator's model, and the status fields it writes."""
    model = VineWorkflowSpec.model_json_schema(by_alias=True)
    spec = set(_paths(model, model.get("$defs", {}), "spec"))
    return spec | {f"status.{name}" for name in STATUS_FIELDS}


def served_paths(document: Mapping[str, Any]) -> set[str] | None:
    """The VineWorkflow schema's field paths in an OpenAPI v3 group-version document (None
    when the document has no VineWorkflow)."""
    schemas = (document.get("components") or {}).get("schemas") or {}
    for schema in schemas.values():
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        if any(g.get("kind") == KIND and g.get("group") == GROUP for g in gvks):
            paths: set[str] = set()
            for top in ("spec", "status"):
                node = (schema.get("properties") or {}).get(top)
                if node is not None:
                    paths |= set(_paths(_deref(node, schemas), schemas, top))
            return paths
    return None


def _deref(node: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref") or next((o.get("$ref") for o in node.get("allOf") or [] if "$ref" in o), None)
    return schemas[str(ref).rsplit("/", 1)[1]] if ref else node


def missing_fields(document: Mapping[str, Any]) -> list[str]:
    """The fields this operator needs that the served schema lacks (sorted)."""
    served = served_paths(document)
    if served is None:
        return sorted(required_paths())
    # A field inside a free-form object (preserve-unknown-fields) is served as far as it goes.
    return sorted(p for p in required_paths() if p not in served)


def served_document(kube: KubeApi) -> Mapping[str, Any] | None:
    """The OpenAPI v3 document of kubevine.io/v1alpha1, or None while the group is not served."""
    try:
        root = kube.get_path("/openapi/v3")
        entry = (root.get("paths") or {}).get(f"apis/{GROUP}/{VERSION}")
        return None if entry is None else kube.get_path(str(entry["serverRelativeURL"]))
    except KubeError as e:
        raise CrdError(f"cannot read the VineWorkflow schema the cluster serves (/openapi/v3): {e}") from e


def check(kube: KubeApi, wait_seconds: float = 60.0) -> None:
    """Raise `CrdError` unless the cluster serves a VineWorkflow schema with every field this
    operator uses. A CRD installed a moment ago (the chart installs it with the operator) takes
    a few seconds to be published: the group is looked for until `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    document = served_document(kube)
    while document is None and time.monotonic() < deadline:
        time.sleep(1.0)  # polling for the CRD's publication, with a deadline
        document = served_document(kube)
    if document is None:
        raise CrdError(f"the cluster serves no {GROUP}/{VERSION}: install the CRDs first ({UPGRADE})")
    missing = missing_fields(document)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CrdError(
            f"the VineWorkflow CRD in the cluster is older than this operator: it lacks {shown}. "
            f"Helm does not upgrade CRDs; upgrade it with `{UPGRADE}` (from the chart of this "
            "operator's version), then start the operator again"
        )
