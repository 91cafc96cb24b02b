"""A CRD's structural schema applied to custom resources: defaults, pruning, validation.

A real API server defaults and prunes custom resources and rejects invalid ones. An
operator that forgets `x-kubernetes-preserve-unknown-fields` on its status, or that
relies on a default, must behave here as it would in a cluster; so the emulator does
what Kubernetes does, for the subset of OpenAPI v3 that CRDs commonly use (type,
properties, additionalProperties, items, required, enum, minimum/maximum, min/max
length and items, pattern, nullable, default, x-kubernetes-int-or-string and
x-kubernetes-preserve-unknown-fields). anyOf/oneOf/allOf/not and CEL rules are ignored.
"""

from __future__ import annotations

import copy
import re
from typing import Any

_ROOT_KEEP = {"apiVersion", "kind", "metadata"}


def apply_defaults(value: Any, schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in list(value):
                if name not in props:
                    value[name] = apply_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def prune(
    value: Any, schema: dict[str, Any] | None, path: str, unknown: list[str], root: bool = False
) -> Any:
    """Drop fields the schema does not know; record their paths in `unknown`."""
    if schema is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = {}
        for name, item in value.items():
            sub_path = f"{path}.{name}" if path else name
            if root and name in _ROOT_KEEP:
                result[name] = item
            elif name in props:
                result[name] = prune(item, props[name], sub_path, unknown)
            elif isinstance(extra, dict):
                result[name] = prune(item, extra, sub_path, unknown)
            elif extra is True:
                result[name] = item
            else:
                unknown.append(sub_path)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], f"{path}[{n}]", unknown) for n, item in enumerate(value)]
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(value: Any, schema: dict[str, Any] | None, path: str, errors: list[str]) -> None:
    if schema is None:
        return
    if value is None:
        if not schema.get("nullable"):
            errors.append(
                f'{path}: Invalid value: "null": {path} in body must be of type {schema.get("type")}'
            )
        return
    typ = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: Invalid value: must be an integer or a string")
        return
    if typ in _TYPES:
        ok = isinstance(value, _TYPES[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: Invalid value: {value!r}: {path} in body must be of type {typ}")
            return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        errors.append(f"{path}: Unsupported value: {value!r}: supported values: {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be <= {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                f"{path}: Invalid value: {value!r}: should be at least {schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: Invalid value: {value!r}: should match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: Invalid value: should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: must have at most {schema['maxItems']} items")
        for n, item in enumerate(value):
            validate(item, schema.get("items"), f"{path}[{n}]", errors)
    if isinstance(value, dict):
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}.{name}: Required value")
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                validate(item, props[name], f"{path}.{name}", errors)
            elif isinstance(extra, dict):
                validate(item, extra, f"{path}.{name}", errors)


def process(
    obj: dict[str, Any], schema: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Default, prune and validate a custom resource.

    Returns the processed object, the unknown (pruned) field paths and the errors.
    """
    if schema is None:
        return obj, [], []
    obj = apply_defaults(copy.deepcopy(obj), schema)
    unknown: list[str] = []
    obj = prune(obj, schema, "", unknown, root=True)
    errors: list[str] = []
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    sub_schema = dict(schema)
    sub_schema["required"] = [r for r in schema.get("required") or [] if r not in _ROOT_KEEP]
    sub_schema["properties"] = {
        k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_KEEP
    }
    for name in sub_schema["required"]:
        if name not in body:
            errors.append(f"{name}: Required value")
    for name, item in body.items():
        validate(item, sub_schema["properties"].get(name), name, errors)
    return obj, unknown, errors
