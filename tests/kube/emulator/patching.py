"""The three patch types of the Kubernetes API, applied to plain JSON objects.

kmock merges every patch as nested dicts; real clients send JSON merge patches (kopf,
kubectl for custom resources), strategic merge patches (kubectl and the python client
for built-in types, whose lists of containers/env/volumes merge by key) and JSON
patches (kopf's finalizers, guarded by a `test` op on resourceVersion that must fail
with 422, not 500).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
from kmock import KubernetesError


class PatchError(KubernetesError):
    """A patch that cannot be applied: 422 Unprocessable Entity, as Kubernetes answers."""


def _unprocessable(message: str) -> PatchError:
    return PatchError(status=422, reason="Invalid", message=message, details={})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise _unprocessable("a JSON patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(ops).apply(target, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise _unprocessable(f"the server rejected our request due to an error in our request: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise _unprocessable(f"the JSON patch cannot be applied: {e}") from e


# Lists of built-in types that merge item by item, keyed by a field (patchMergeKey).
# Keyed by the field name alone: in the types we serve a name means the same everywhere.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
    "secrets": "name",
}
# Lists of scalars merged as sets (patchStrategy: merge on a primitive list).
_PRIMITIVE_MERGE = {"finalizers"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, good enough for the built-in objects the tests use.

    Supports merge keys for the usual lists, `$patch: replace|delete`, `$retainKeys`,
    `$deleteFromPrimitiveList/<field>` and ignores `$setElementOrder/<field>`.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = list(current) if isinstance(current, list) else []
    result: list[Any]
    if field in _PRIMITIVE_MERGE:
        result = current + [v for v in patch if v not in current]
        return result
    key = _merge_key(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch):
        if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
            return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return list(copy.deepcopy(patch))
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if "$patch" not in i]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next(
            (n for n, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item.get(key)),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def apply_patch(content_type: str, target: dict[str, Any], patch: Any, *, builtin: bool) -> Any:
    """Dispatch on the Content-Type of a PATCH request."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json-patch+json":
        return json_patch(target, patch)
    if ctype == "application/merge-patch+json":
        return merge_patch(target, patch)
    if ctype == "application/strategic-merge-patch+json":
        if not builtin:
            raise PatchError(
                status=415,
                reason="UnsupportedMediaType",
                message="strategic merge patch is not supported for custom resources",
                details={},
            )
        return strategic_merge_patch(target, patch)
    if ctype == "application/apply-patch+yaml":
        # Server-side apply, approximated: the applied configuration is merged in.
        return strategic_merge_patch(target, patch) if builtin else merge_patch(target, patch)
    raise PatchError(
        status=415, reason="UnsupportedMediaType", message=f"unsupported patch type {ctype!r}", details={}
    )
