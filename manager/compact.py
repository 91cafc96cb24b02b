"""Queued task specs kept small: what pydantic decodes, with its repeated parts shared.

A decoded command :class:`~kubevine.protocol.TaskSpec` took ~2.1 KB of the manager's memory for
a spec whose JSON is ~200 bytes (docs/scale.md, section 4): each one carries its own
``__pydantic_fields_set__`` (a set of the field names the client sent, ~730 B), its own
``Resources`` and its own empty ``env``/``inputs``/``outputs``/``features``/``environments``.
:func:`compact` makes every spec share one fields set per distinct set of names, one
``Resources`` per distinct shape (they are frozen) and one empty value of each kind.

Safe because the manager never changes a spec in place: a spec that must change is replaced
(``model_copy(update=...)``, which copies the fields set it changes), and what goes to workers and
to the store is serialised from it. Pure, and bounded: at most :data:`MAX_INTERNED` fields sets
and resource shapes are kept; past that, specs keep their own.
"""

from __future__ import annotations

from typing import Any

from kubevine.protocol import TaskSpec
from kubevine.resources import Resources

MAX_INTERNED = 4096

_fields_sets: dict[frozenset[str], set[str]] = {}
_shapes: dict[tuple[float, int, int, int], Resources] = {}
_EMPTY_LIST: list[Any] = []
_EMPTY_DICT: dict[str, str] = {}
_EMPTY_FIELDS = ("inputs", "outputs", "features", "environments")


def compact(spec: TaskSpec) -> TaskSpec:
    """``spec``, its repeated parts replaced by shared ones (in place; returned for chaining)."""
    d = spec.__dict__
    fs = spec.__pydantic_fields_set__
    key = frozenset(fs)
    shared = _fields_sets.get(key)
    if shared is None and len(_fields_sets) < MAX_INTERNED:
        shared = _fields_sets[key] = set(fs)
    if shared is not None:
        object.__setattr__(spec, "__pydantic_fields_set__", shared)
    r: Resources = d["resources"]
    shape = (r.cores, r.memory, r.disk, r.gpus)
    same = _shapes.get(shape)
    if same is None and len(_shapes) < MAX_INTERNED:
        same = _shapes[shape] = r
    if same is not None:
        d["resources"] = same
    for name in _EMPTY_FIELDS:
        if not d[name]:
            d[name] = _EMPTY_LIST
    if not d["env"]:
        d["env"] = _EMPTY_DICT
    return spec
