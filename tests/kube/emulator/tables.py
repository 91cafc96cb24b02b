"""Server-side printing: `meta.k8s.io/v1 Table` responses for `kubectl get`.

kubectl asks for `as=Table` and prints whatever columns the server sends; without it,
a custom resource's additionalPrinterColumns never show. Built-in kinds get the
columns people expect from a real cluster (pods: READY, STATUS, RESTARTS, AGE, IP, NODE).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]


def human_age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600 * 3:
        return f"{seconds // 60}m"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


_TOKEN_RE = re.compile(
    r"\.([A-Za-z0-9_\-/]+)|\[(\d+)\]|\[\?\(@\.([\w.]+)\s*==\s*[\"']([^\"']*)[\"']\)\]|\[\*\]"
)


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.lstrip("$")
    nodes: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN_RE.match(path, pos)
        if not m:
            return None
        pos = m.end()
        out: list[Any] = []
        for node in nodes:
            if m.group(1) is not None:
                if isinstance(node, dict) and m.group(1) in node:
                    out.append(node[m.group(1)])
            elif m.group(2) is not None:
                if isinstance(node, list) and int(m.group(2)) < len(node):
                    out.append(node[int(m.group(2))])
            elif m.group(3) is not None:
                if isinstance(node, list):
                    out.extend(
                        item
                        for item in node
                        if isinstance(item, dict) and str(jsonpath(item, "." + m.group(3))) == m.group(4)
                    )
            elif isinstance(node, list):
                out.extend(node)
        nodes = out
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else nodes


def _column(name: str, type_: str = "string", priority: int = 0, description: str = "", fmt: str = "") -> Obj:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _pod_cells(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Pending"
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        terminated = (s.get("state") or {}).get("terminated") or {}
        phase = (
            waiting.get("reason")
            or (terminated.get("reason") if phase not in ("Succeeded", "Failed") else None)
            or phase
        )
    if pod["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    return [
        f"{ready}/{len(spec.get('containers') or [])}",
        phase,
        restarts,
        human_age(pod["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def _builtin_columns(rt: ResourceType) -> tuple[list[Obj], Any] | None:
    age = _column("Age")
    if rt.key == ("", "pods"):
        cols = [
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "integer"),
            age,
            _column("IP", priority=1),
            _column("Node", priority=1),
        ]
        return cols, _pod_cells
    if rt.key == ("apps", "deployments") or rt.key == ("apps", "statefulsets"):
        cols = [_column("Ready"), _column("Up-to-date", "integer"), _column("Available", "integer"), age]

        def deploy(o: Obj) -> list[Any]:
            st = o.get("status") or {}
            return [
                f"{st.get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}",
                st.get("updatedReplicas", 0),
                st.get("availableReplicas", 0),
                human_age(o["metadata"].get("creationTimestamp")),
            ]

        return cols, deploy
    if rt.key == ("batch", "jobs"):
        cols = [_column("Status"), _column("Completions"), age]

        def job(o: Obj) -> list[Any]:
            st = o.get("status") or {}
            conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
            state = (
                "Complete"
                if conds.get("Complete") == "True"
                else "Failed"
                if conds.get("Failed") == "True"
                else "Running"
            )
            return [
                state,
                f"{st.get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}",
                human_age(o["metadata"].get("creationTimestamp")),
            ]

        return cols, job
    if rt.key == ("", "services"):
        cols = [_column("Type"), _column("Cluster-IP"), _column("Port(s)"), age]

        def svc(o: Obj) -> list[Any]:
            sp = o.get("spec") or {}
            ports = (
                ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in sp.get("ports") or [])
                or "<none>"
            )
            return [
                sp.get("type", "ClusterIP"),
                sp.get("clusterIP", "None"),
                ports,
                human_age(o["metadata"].get("creationTimestamp")),
            ]

        return cols, svc
    if rt.key == ("", "nodes"):
        cols = [_column("Status"), age]

        def node(o: Obj) -> list[Any]:
            conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
            return [
                "Ready" if conds.get("Ready") == "True" else "NotReady",
                human_age(o["metadata"].get("creationTimestamp")),
            ]

        return cols, node
    if rt.key == ("", "namespaces"):
        return [_column("Status"), age], lambda o: [
            (o.get("status") or {}).get("phase", "Active"),
            human_age(o["metadata"].get("creationTimestamp")),
        ]
    if rt.key == ("", "events"):
        cols = [_column("Type"), _column("Reason"), _column("Object"), _column("Message")]

        def event(o: Obj) -> list[Any]:
            inv = o.get("involvedObject") or {}
            return [
                o.get("type", ""),
                o.get("reason", ""),
                f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
                o.get("message", ""),
            ]

        return cols, event
    return None


def render_table(rt: ResourceType, objs: list[Obj], resource_version: str, include: str = "Metadata") -> Obj:
    """A Table of `objs`, with `include` = None | Metadata | Object for each row's object."""
    name_col = _column("Name", fmt="name", description="Name must be unique within a namespace.")
    builtin = _builtin_columns(rt) if rt.builtin else None
    if builtin is not None:
        cols, cells_of = builtin
        columns = [name_col, *cols]

        def row_cells(o: Obj) -> list[Any]:
            return [o["metadata"]["name"], *cells_of(o)]
    elif rt.printer_columns:
        columns = [name_col] + [
            _column(
                c["name"],
                c.get("type", "string"),
                int(c.get("priority", 0)),
                c.get("description", ""),
                c.get("format", ""),
            )
            for c in rt.printer_columns
        ]

        def row_cells(o: Obj) -> list[Any]:
            cells: list[Any] = [o["metadata"]["name"]]
            for c in rt.printer_columns:
                value = jsonpath(o, c.get("jsonPath", ""))
                if c.get("type") == "date":
                    value = human_age(value) if value else "<unknown>"
                elif isinstance(value, (dict, list)):
                    import json

                    value = json.dumps(value)
                cells.append(value)
            return cells
    else:
        columns = [name_col, _column("Age", "date")]

        def row_cells(o: Obj) -> list[Any]:
            return [o["metadata"]["name"], human_age(o["metadata"].get("creationTimestamp"))]

    rows = []
    for o in objs:
        row: Obj = {"cells": row_cells(o)}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
