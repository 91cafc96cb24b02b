"""Just enough of the Deployment, StatefulSet and Job controllers for the process kubelet.

The operator creates workload objects, not pods; in a cluster kube-controller-manager
turns them into pods and reports their status. Here each controller is a pure function
of the workload and the pods it owns that returns what to do (pods to create or delete,
the status to write); the kubelet performs it. Simplifications: Deployments own pods
directly (no ReplicaSets) and roll out as Recreate; StatefulSets create pods in order
(OrderedReady) or all at once (Parallel); a Job runs one pod at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import random
import string
from typing import Any

from .emulator.selectors import labels_match, selector_from_match

Obj = dict[str, Any]


@dataclasses.dataclass
class Actions:
    create: list[Obj] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)  # pod names
    status: Obj | None = None  # the new status, or None when unchanged


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owned_pods(owner: Obj, pods: list[Obj]) -> list[Obj]:
    uid = owner["metadata"]["uid"]
    return [p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def is_ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _is_active(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not pod["metadata"].get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def pod_from_template(owner: Obj, name: str, extra_labels: dict[str, str]) -> Obj:
    template = copy.deepcopy(owner["spec"].get("template") or {})
    meta = template.get("metadata") or {}
    labels = {**(meta.get("labels") or {}), **extra_labels}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "annotations": meta.get("annotations") or {},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template.get("spec") or {},
    }


def _suffix(n: int = 5) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


def _changed(owner: Obj, status: Obj) -> Obj | None:
    return status if status != (owner.get("status") or {}) else None


def reconcile_deployment(deploy: Obj, pods: list[Obj]) -> Actions:
    spec = deploy.get("spec") or {}
    selector = selector_from_match(spec.get("selector"))
    mine = [p for p in owned_pods(deploy, pods) if labels_match(selector, p)]
    live = [p for p in mine if _is_active(p)]
    # A failed pod of a Deployment is replaced (restartPolicy Always rarely lets it fail).
    actions = Actions(
        delete=[
            p["metadata"]["name"]
            for p in mine
            if not _is_active(p) and not p["metadata"].get("deletionTimestamp")
        ]
    )
    current = template_hash(spec.get("template") or {})
    old = [p for p in live if (p["metadata"].get("labels") or {}).get("pod-template-hash") != current]
    desired = int(spec.get("replicas", 1))
    if old:  # Recreate: the old pods go first, the new ones come once all are gone
        actions.delete += [p["metadata"]["name"] for p in old]
    elif len(live) < desired:
        old_terminating = [
            p
            for p in mine
            if p["metadata"].get("deletionTimestamp")
            and (p["metadata"].get("labels") or {}).get("pod-template-hash") != current
        ]
        if not old_terminating:
            for _ in range(desired - len(live)):
                name = f"{deploy['metadata']['name']}-{current[:8]}-{_suffix()}"
                actions.create.append(pod_from_template(deploy, name, {"pod-template-hash": current}))
    elif len(live) > desired:
        extra = sorted(live, key=lambda p: (is_ready(p), p["metadata"].get("creationTimestamp", "")))
        actions.delete += [p["metadata"]["name"] for p in extra[: len(live) - desired]]
    ready = sum(1 for p in live if is_ready(p))
    updated = sum(1 for p in live if p not in old)
    status: Obj = {
        "observedGeneration": deploy["metadata"].get("generation", 1),
        "replicas": len(live),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ready >= desired else "False",
                "reason": "MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
                "message": f"{ready}/{desired} replicas ready",
            }
        ],
    }
    if len(live) - ready:
        status["unavailableReplicas"] = len(live) - ready
    actions.status = _changed(deploy, _keep_times(deploy, status))
    return actions


def reconcile_statefulset(sts: Obj, pods: list[Obj]) -> Actions:
    spec = sts.get("spec") or {}
    name = sts["metadata"]["name"]
    desired = int(spec.get("replicas", 1))
    mine = {p["metadata"]["name"]: p for p in owned_pods(sts, pods)}
    actions = Actions()
    parallel = spec.get("podManagementPolicy") == "Parallel"
    for i in range(desired):
        pod_name = f"{name}-{i}"
        pod = mine.get(pod_name)
        if pod is None:
            labels = {
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(i),
                "controller-revision-hash": f"{name}-{template_hash(spec.get('template') or {})}",
            }
            new = pod_from_template(sts, pod_name, labels)
            for claim in spec.get("volumeClaimTemplates") or []:
                claim_name = claim["metadata"]["name"]
                new["spec"].setdefault("volumes", []).append(
                    {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"}}
                )
            new["spec"].setdefault("hostname", pod_name)
            if spec.get("serviceName"):
                new["spec"].setdefault("subdomain", spec["serviceName"])
            actions.create.append(new)
            if not parallel:
                break
        elif not parallel and not is_ready(pod):
            break
        elif not _is_active(pod) and not pod["metadata"].get("deletionTimestamp"):
            actions.delete.append(pod_name)  # a failed member is recreated under the same name
    for pod_name, pod in mine.items():
        index = pod_name.rsplit("-", 1)[-1]
        if index.isdigit() and int(index) >= desired and not pod["metadata"].get("deletionTimestamp"):
            actions.delete.append(pod_name)
    live = [p for p in mine.values() if _is_active(p)]
    ready = sum(1 for p in live if is_ready(p))
    status = {
        "observedGeneration": sts["metadata"].get("generation", 1),
        "replicas": len(live),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": len(live),
        "updatedReplicas": len(live),
    }
    actions.status = _changed(sts, status)
    return actions


def reconcile_job(job: Obj, pods: list[Obj]) -> Actions:
    spec = job.get("spec") or {}
    status = copy.deepcopy(job.get("status") or {})
    actions = Actions()
    conditions = status.get("conditions") or []
    if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
        active_pods = [p for p in owned_pods(job, pods) if _is_active(p)]
        actions.delete = [p["metadata"]["name"] for p in active_pods]
        return actions
    mine = owned_pods(job, pods)
    succeeded = sum(1 for p in mine if (p.get("status") or {}).get("phase") == "Succeeded")
    failed = sum(1 for p in mine if (p.get("status") or {}).get("phase") == "Failed")
    active = [p for p in mine if _is_active(p)]
    completions = int(spec.get("completions") or 1)
    backoff = int(spec.get("backoffLimit", 6))
    status.update(
        active=len(active), succeeded=succeeded, failed=failed, ready=sum(1 for p in active if is_ready(p))
    )
    status.setdefault("startTime", _now())
    now = _now()
    if succeeded >= completions:
        status["completionTime"] = now
        status["conditions"] = [
            *conditions,
            {
                "type": "SuccessCriteriaMet",
                "status": "True",
                "reason": "CompletionsReached",
                "message": "Reached expected number of succeeded pods",
                "lastTransitionTime": now,
            },
            {
                "type": "Complete",
                "status": "True",
                "reason": "CompletionsReached",
                "message": "Reached expected number of succeeded pods",
                "lastTransitionTime": now,
            },
        ]
    elif failed > backoff:
        status["conditions"] = [
            *conditions,
            {
                "type": "FailureTarget",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": now,
            },
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": now,
            },
        ]
    elif not active and not spec.get("suspend"):
        labels = {
            "batch.kubernetes.io/job-name": job["metadata"]["name"],
            "job-name": job["metadata"]["name"],
        }
        actions.create.append(pod_from_template(job, f"{job['metadata']['name']}-{_suffix()}", labels))
    actions.status = _changed(job, status)
    return actions


def _keep_times(owner: Obj, status: Obj) -> Obj:
    """Carry lastTransitionTime over when a condition did not change (no status churn)."""
    old = {c.get("type"): c for c in (owner.get("status") or {}).get("conditions") or []}
    for cond in status.get("conditions") or []:
        prev = old.get(cond["type"])
        same = prev is not None and prev.get("status") == cond["status"]
        cond["lastTransitionTime"] = prev.get("lastTransitionTime", _now()) if same and prev else _now()
        cond["lastUpdateTime"] = cond["lastTransitionTime"]
    return status
