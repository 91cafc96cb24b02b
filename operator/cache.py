"""What the operator knows of every workflow's children, from watches instead of reads.

Exists so that a step of the autoscaler costs no API call when nothing changes (issue 17:
with 100 VineWorkflows, polling each one's pods, Deployment, StatefulSet and Job every 5 s
meant 500 reads every 5 s). The operator watches the kinds it creates — only objects
labelled `app.kubernetes.io/managed-by=kubevine-operator`, filtered by the API server — and
kopf keeps them in indexes keyed by (namespace, workflow); `Children` is one workflow's
slice of them, read like the API would answer.

A watch lags the writes that cause its events by a moment, so `Expectations` remembers what
this process just created or deleted until the watch shows it (the ReplicaSet controller's
"expectations"): a step that runs right after another never creates a pod twice or takes a
pod it just deleted for a live one. Pure: no kopf, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubevine.operator.naming import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_WORKFLOW, MANAGED_BY

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, workflow name)

#: The server-side label selector of every watch of children.
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
#: How long something this process did is assumed to be on its way through the watch.
EXPECTATION_SECONDS = 30.0


def index_entry(body: Mapping[str, Any]) -> dict[Key, Obj]:
    """What an index keeps of one child: the object (without managedFields) under its
    workflow's key; nothing for an object that names no workflow."""
    meta = body.get("metadata") or {}
    workflow = (meta.get("labels") or {}).get(LABEL_WORKFLOW)
    if not workflow:
        return {}
    slim = {k: copy.deepcopy(body[k]) for k in ("apiVersion", "kind", "spec", "status") if k in body}
    slim["metadata"] = {k: copy.deepcopy(v) for k, v in meta.items() if k != "managedFields"}
    return {(str(meta.get("namespace") or ""), str(workflow)): slim}


@dataclass(frozen=True)
class Children:
    """One workflow's children as the watches last saw them, by kind."""

    objects: Mapping[str, list[Obj]] = field(default_factory=dict)

    @classmethod
    def from_indexes(cls, indexes: Mapping[str, Mapping[Key, Iterable[Obj]]], key: Key) -> Children:
        """`indexes` maps a kind to its index (key → the objects of that workflow)."""
        objects: dict[str, list[Obj]] = {}
        for kind, index in indexes.items():
            try:
                found = index[key]
            except KeyError:
                found = []
            objects[kind] = list(found)
        return cls(objects)

    def of(self, kind: str) -> list[Obj]:
        return list(self.objects.get(kind, []))

    def get(self, kind: str, name: str) -> Obj | None:
        for obj in self.objects.get(kind, []):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def pods(self, component: str) -> list[Obj]:
        return [
            p
            for p in self.objects.get("Pod", [])
            if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPONENT) == component
        ]


@dataclass
class Expectations:
    """Children this process created or deleted, not yet seen so by the watch."""

    created: dict[tuple[str, str], tuple[float, Obj]] = field(default_factory=dict)  # (kind, name)
    deleted: dict[tuple[str, str], float] = field(default_factory=dict)

    def expect_created(self, obj: Obj, now: float) -> None:
        self.created[(obj["kind"], obj["metadata"]["name"])] = (now + EXPECTATION_SECONDS, obj)

    def expect_deleted(self, kind: str, name: str, now: float) -> None:
        self.deleted[(kind, name)] = now + EXPECTATION_SECONDS

    def apply(self, children: Children, now: float) -> Children:
        """`children` with what the watch has not shown yet: created objects added, deleted
        ones marked as being deleted. Expectations the watch met, or that are too old, go."""
        objects = {kind: list(objs) for kind, objs in children.objects.items()}
        for (kind, name), (until, obj) in list(self.created.items()):
            if until < now or children.get(kind, name) is not None:
                del self.created[(kind, name)]
            else:
                objects.setdefault(kind, []).append(obj)
        for (kind, name), until in list(self.deleted.items()):
            seen = children.get(kind, name)
            if until < now or seen is None or (seen.get("metadata") or {}).get("deletionTimestamp"):
                del self.deleted[(kind, name)]
                continue
            objects[kind] = [
                {**o, "metadata": {**o["metadata"], "deletionTimestamp": "expected"}}
                if o["metadata"]["name"] == name
                else o
                for o in objects.get(kind, [])
            ]
        return Children(objects)
