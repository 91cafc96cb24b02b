"""A refused create of the token Secret is retried with the back-off, not after the resync.

The real API server refuses a child now and then for a reason that passes by itself: right
after the CRD is (re)installed, its admission plugin cannot yet map `VineWorkflow` and answers
403 "cannot set blockOwnerDeletion". Every other child is watched and comes back within a
step; the Secret is not watched (the operator may read only the Secrets it names), so if a
refused create counted as "checked", the manager pod waited `resync_seconds` (300 s by
default) for its token. Here the emulator refuses the Secret's first creates with that 403.
"""

from __future__ import annotations

import pathlib
from typing import Any

import kmock

from .emulator import KubeAPI
from .helpers import wait_for
from .kubelet import Kubelet
from .vine import OperatorProcess, apply, apply_crds, events, manager_address, pool_spec, token, workflow

REFUSAL = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "reason": "Forbidden",
    "code": 403,
    "message": 'secrets "late-token" is forbidden: cannot set blockOwnerDeletion in this case because '
    "cannot find RESTMapping for APIVersion kubevine.io/v1alpha1 Kind VineWorkflow",
}


def test_a_refused_token_secret_is_created_on_the_next_attempt_not_after_the_resync(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    apply_crds(kube_api)
    refusals: list[str] = []

    def refuse_the_secret(request: Any) -> bool:
        """The first two POSTs of the token Secret are refused."""
        secret_post = request.method == kmock.method.POST and request.url.path.endswith("/secrets")
        if secret_post and len(refusals) < 2:
            refusals.append(request.url.path)
            return True
        return False

    assert kube_api.handler is not None
    kube_api.handler[refuse_the_secret] << kmock.Response(status=403, payload=REFUSAL)
    settings = {"KUBEVINE_OPERATOR_RESYNC_SECONDS": "300", "KUBEVINE_OPERATOR_BACKOFF_SECONDS": "1"}
    operator = OperatorProcess(kube_api, tmp_path / "operator.log", settings=settings).start()
    try:
        wait_for(operator.healthy, timeout=20, what=f"the operator to be live:\n{operator.log_tail()}")
        apply(kube_api, workflow("late", pool_spec(min=0, max=1)))
        # Refused twice (1 s, then 2 s of back-off), then created: well within a minute, while
        # the next resync would come after 300 s.
        address = manager_address(kube_api, "late", timeout=40)
        assert len(refusals) == 2, refusals
        assert token(kube_api, "late")
        assert address
        said = [e["message"] for e in events(kube_api, "late") if e["reason"] == "ReconcileFailed"]
        assert any("cannot set blockOwnerDeletion" in m for m in said), said
    finally:
        operator.stop()
