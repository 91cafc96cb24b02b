"""An invalid VineWorkflow is refused with a clear message, and nothing is created for it.

The API server refuses what the CRD's structural schema can express (an unknown field,
under kubectl's strict field validation). What gets past it — here `workers.min >
workers.max`, a CEL rule the emulator does not evaluate, and a reserved environment
variable — the operator refuses: phase Invalid, condition Valid=False with the message,
a Warning Event, no child objects. Fixing the spec brings the workflow up.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from .emulator import KubeAPI
from .helpers import KUBECTL_BINARIES, kubectl, kubectl_json, wait_for
from .vine import apply, apply_crds, conditions, events, pool_spec, running_operator, workflow

CHILDREN = "pods,deployments,services,statefulsets,secrets,jobs"


def assert_refused(api: KubeAPI, name: str, message: str, binary: str) -> None:
    """Phase Invalid, Valid=False with `message`, and a Warning Event saying so."""

    def refusal() -> dict[str, Any] | None:
        body: dict[str, Any] = kubectl_json(api, "get", "vw", name, binary=binary)
        return body if (body.get("status") or {}).get("phase") == "Invalid" else None

    def warnings() -> list[dict[str, Any]]:
        return [e for e in events(api, name) if e["reason"] == "InvalidSpec"]

    body = wait_for(refusal, timeout=15, interval=0.1, what=f"{name} to be Invalid")
    assert body is not None
    valid = conditions(body)["Valid"]
    assert valid["status"] == "False" and valid["reason"] == "InvalidSpec"
    assert message in valid["message"], valid["message"]
    warning = wait_for(warnings, what=f"the Warning Event of {name}")[0]
    assert warning["type"] == "Warning" and message in warning["message"]
    assert "nothing was created" in warning["message"]


@pytest.mark.parametrize("binary", list(KUBECTL_BINARIES.values()), ids=list(KUBECTL_BINARIES))
def test_invalid_spec_sets_valid_false_and_a_warning_event_and_creates_nothing(
    kube_api: KubeAPI, tmp_path: pathlib.Path, binary: str
) -> None:
    apply_crds(kube_api, binary=binary)
    log = tmp_path / "operator.log"
    with running_operator(kube_api, log, settings={"KUBEVINE_LOG_FORMAT": "json"}) as operator:
        unknown = pool_spec()
        unknown["workers"]["colour"] = "blue"
        refused = kubectl(
            kube_api,
            "apply",
            "-f",
            "-",
            stdin=json.dumps(workflow("typo", unknown)),
            binary=binary,
            check=False,
        )
        assert refused.returncode != 0 and "colour" in refused.stderr, refused.stderr

        apply(kube_api, workflow("bad", pool_spec(min=4, max=2)), binary=binary)
        reserved = pool_spec(env=[{"name": "KUBEVINE_TOKEN", "value": "mine"}])
        apply(kube_api, workflow("bad-env", reserved), binary=binary)

        for name, message in [
            ("bad", "workers.min must be less than or equal to workers.max (min=4, max=2)"),
            ("bad-env", "workers.env[0]: env KUBEVINE_TOKEN is set by the operator and cannot be overridden"),
        ]:
            assert_refused(kube_api, name, message, binary)

        # a valid workflow applied after it is handled, so the operator has had its turn at "bad"
        apply(kube_api, workflow("good", pool_spec()), binary=binary)
        wait_for(lambda: "Created" in [e["reason"] for e in events(kube_api, "good")], what="good's children")
        wait_for(lambda: kubectl_json(kube_api, "get", "vw", "good").get("status"), what="good's first step")
        for name in ("bad", "bad-env"):
            assert (
                kubectl_json(kube_api, "get", CHILDREN, "-l", f"kubevine.io/workflow={name}")["items"] == []
            )
            assert kubectl_json(kube_api, "get", "vw", name)["status"]["phase"] == "Invalid"
        # the operator's /metrics counts them too
        wait_for(
            lambda: operator.metrics().get(("kubevine_operator_workflows", (("phase", "Invalid"),))) == 2,
            timeout=10,
            what="two Invalid workflows in the operator's /metrics",
        )
        refusals = (
            "kubevine_operator_handler_errors_total",
            (("error", "invalid_spec"), ("handler", "children")),
        )
        assert operator.metrics()[refusals] >= 2

        # fixing the spec is enough: the operator creates what was missing
        apply(kube_api, workflow("bad", pool_spec(min=0, max=2)), binary=binary)
        wait_for(
            lambda: conditions(kubectl_json(kube_api, "get", "vw", "bad"))["Valid"]["status"] == "True",
            timeout=15,
            what=f"the fixed spec to be accepted:\n{operator.log_tail()}",
        )
        names = {
            obj["metadata"]["name"]
            for obj in kubectl_json(kube_api, "get", CHILDREN, "-l", "kubevine.io/workflow=bad")["items"]
        }
        assert {"bad-token", "bad-manager", "bad-redis"} <= names
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # KUBEVINE_LOG_FORMAT=json: every line is JSON
    assert any("InvalidSpec" in r.get("message", "") or "invalid" in r.get("message", "") for r in records)
