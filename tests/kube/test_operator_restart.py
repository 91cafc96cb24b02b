"""The operator holds nothing in memory that the cluster does not: killed mid-scale (SIGKILL,
no chance to clean up) and started again, it converges to the same pool without creating
a pod twice, and the tasks finish on their first attempt."""

from __future__ import annotations

import pathlib
import time

from kubevine import Manager, Task

from .emulator import KubeAPI
from .helpers import wait_for
from .kubelet import Kubelet
from .vine import (
    OperatorProcess,
    apply,
    apply_crds,
    manager_address,
    most_pods_at_once,
    pool_spec,
    token,
    vw,
    worker_pod_history,
    worker_pods,
    workflow,
)

#: One pod per step, so that a scale-up to 3 is still under way when the operator dies.
ONE_AT_A_TIME = {"KUBEVINE_OPERATOR_MAX_CREATE_PER_STEP": "1"}


def test_operator_killed_mid_scale_up_and_restarted_converges_without_duplicate_pods(
    kube_api: KubeAPI, kubelet: Kubelet, tmp_path: pathlib.Path
) -> None:
    apply_crds(kube_api)
    log = tmp_path / "operator.log"
    first = OperatorProcess(kube_api, log, settings=ONE_AT_A_TIME).start()
    second: OperatorProcess | None = None
    try:
        wait_for(first.healthy, timeout=20, what=f"the operator to be live:\n{first.log_tail()}")
        apply(kube_api, workflow("resume", pool_spec(min=0, max=3)))
        address = manager_address(kube_api, "resume")
        tasks = [Task(f"sleep 0.3; echo {i}", cores=1) for i in range(60)]
        with Manager(address, token=token(kube_api, "resume"), encrypt=True) as m:
            for task in tasks:
                m.submit(task)
            wait_for(
                lambda: len(worker_pods(kube_api, "resume")) == 1, timeout=20, interval=0.05, what="1st pod"
            )
            first.kill()  # mid-scale: one pod of the three exists
            created_by_first = {p["metadata"]["name"] for p in worker_pods(kube_api, "resume")}
            assert 1 <= len(created_by_first) < 3

            second = OperatorProcess(kube_api, log, settings=ONE_AT_A_TIME).start()
            wait_for(
                lambda: vw(kube_api, "resume")["status"]["workers"]["connected"] == 3,
                timeout=30,
                interval=0.2,
                what=f"the restarted operator to complete the pool:\n{second.log_tail()}",
            )
            deadline = time.monotonic() + 60
            while not m.empty():
                assert time.monotonic() < deadline, second.log_tail()
                m.wait(1)
        assert all(t.successful() for t in tasks) and {t.attempts for t in tasks} == {1}

        history = worker_pod_history(kube_api, "resume")
        assert most_pods_at_once(history) == 3
        names = {name for _, name, _ in history}
        assert len(names) == 3 and created_by_first <= names  # the first pods were kept, none duplicated
    finally:
        first.kill()
        if second is not None:
            second.stop()
