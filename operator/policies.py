"""The NetworkPolicies of one VineWorkflow: the flows it needs, and nothing else in.

Exists so that a platform team that runs a default-deny network can read, in one place, every
connection a workflow makes, and let the operator admit exactly those (operator setting
`network_policy`, chart value `networkPolicy.enabled`). Ingress only: egress (to the API
server, DNS, image registries, URLs that tasks fetch) is left to the cluster's own policy.

| into | from | port | why |
|---|---|---|---|
| manager | its workers | ZeroMQ | workers join, take tasks, return results |
| manager | the operator's pods | ZeroMQ | the autoscaler reads the manager's status, drains workers |
| manager | its application; pods labelled `kubevine.io/client=<workflow>` | ZeroMQ | clients |
| manager | anywhere | metrics (9090) | Prometheus scrapes `/metrics` |
| workers | its workers | any (transfer ports are chosen at start) | peer-to-peer file transfers |
| workers | its manager | any | the manager fetches outputs a client asks for |
| Redis | its manager | 6379 | workflow state |

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from kubevine.operator.naming import (
    COMPONENT_APPLICATION,
    COMPONENT_MANAGER,
    COMPONENT_REDIS,
    COMPONENT_WORKER,
    LABEL_CLIENT,
    REDIS_PORT,
    WorkflowRef,
    metadata,
    network_policy_name,
    selector_labels,
)
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import MANAGER_METRICS_PORT, VineWorkflowSpec

Manifest = dict[str, Any]

#: Labels of the operator's own pods (the chart's selector labels).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "kubevine", "app.kubernetes.io/component": "operator"}


def _pods(ref: WorkflowRef, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector_labels(ref, component)}}


def _policy(ref: WorkflowRef, component: str, rules: list[dict[str, Any]]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ref, network_policy_name(ref, component), component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(ref, component)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def operator_peer(settings: OperatorSettings) -> dict[str, Any]:
    """The operator's pods, in the operator's namespace (any namespace if it is not known)."""
    peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}
    peer["namespaceSelector"] = (
        {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}} if settings.namespace else {}
    )
    return peer


def build_network_policies(
    ref: WorkflowRef, spec: VineWorkflowSpec, settings: OperatorSettings
) -> list[Manifest]:
    """One NetworkPolicy per component: manager, workers, and the managed Redis if any."""
    zmq = [{"protocol": "TCP", "port": spec.manager.port}]
    clients = {"podSelector": {"matchLabels": {LABEL_CLIENT: ref.name}}}
    manager = _policy(
        ref,
        COMPONENT_MANAGER,
        [
            {
                "from": [
                    _pods(ref, COMPONENT_WORKER),
                    _pods(ref, COMPONENT_APPLICATION),
                    clients,
                    operator_peer(settings),
                ],
                "ports": zmq,
            },
            {"ports": [{"protocol": "TCP", "port": MANAGER_METRICS_PORT}]},
        ],
    )
    workers = _policy(
        ref, COMPONENT_WORKER, [{"from": [_pods(ref, COMPONENT_WORKER), _pods(ref, COMPONENT_MANAGER)]}]
    )
    policies = [manager, workers]
    if spec.state_store.managed:
        policies.append(
            _policy(
                ref,
                COMPONENT_REDIS,
                [
                    {
                        "from": [_pods(ref, COMPONENT_MANAGER)],
                        "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                    }
                ],
            )
        )
    return policies
