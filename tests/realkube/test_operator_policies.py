"""Names and network policies, as the real API server takes them (the disruption budgets are
checked in test_operator_network.py, on a workflow that runs)."""

from __future__ import annotations

import yaml

from kubevine.operator.naming import WorkflowRef
from kubevine.operator.policies import build_network_policies
from kubevine.operator.settings import OperatorSettings
from kubevine.operator.spec import parse_spec

from .helpers import Kube
from .vine import Release, Workflows, pool_spec, workflow


def test_a_name_that_starts_with_a_digit_is_refused_at_apply(kubevine: Release, kube: Kube) -> None:
    result = Workflows(kube).apply(workflow("2026-run", pool_spec()), check=False)
    assert result.returncode != 0
    assert "a VineWorkflow name starts with a letter" in result.stderr, result.stderr


def test_the_network_policies_are_taken_by_the_api_server(kube: Kube) -> None:
    """What the operator creates with `networkPolicy.enabled`, validated by the real API server
    (server-side dry run: the process kubelet enforces no NetworkPolicy)."""
    ref = WorkflowRef(name="wf", namespace=kube.ns, uid="0f9a6a4e-1111-2222-3333-444455556666")
    spec = parse_spec({"stateStore": {"managed": True}})
    policies = build_network_policies(ref, spec, OperatorSettings(namespace="kubevine"))
    for policy in policies:
        del policy["metadata"]["ownerReferences"]
    result = kube.kubectl(
        "apply", "--dry-run=server", "-o", "yaml", "-f", "-", stdin=yaml.safe_dump_all(policies)
    )
    taken = [d for d in yaml.safe_load_all(result.stdout) if d]
    items = taken[0]["items"] if taken and taken[0].get("kind") == "List" else taken
    assert sorted(p["metadata"]["name"] for p in items) == ["wf-manager", "wf-redis", "wf-worker"]
