"""The emulator's object store: the semantics of the Kubernetes API server, without HTTP.

kmock's own store merges dicts and forgets history; kopf, kubectl and the process
kubelet need what etcd plus the API server give: uids, a global resourceVersion and an
event log to resume watches from, generation that counts spec changes, status
subresource rules, finalizers and graceful deletion, ownerReference garbage
collection, namespaces, defaulting of the built-in types the operator creates, and
CRDs that register their resource types. Everything here is synchronous (one event
loop owns the store), so every request is atomic.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import datetime
import functools
import random
import re
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kmock import KubernetesError

from . import schema as crd_schema
from .resources import Registry, ResourceType

Obj = dict[str, Any]
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
FOREGROUND = "foregroundDeletion"
_CRD = "CustomResourceDefinition.apiextensions.k8s.io"
ORPHAN = "orphan"


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(status: int, reason: str, message: str, **details: Any) -> KubernetesError:
    return KubernetesError(status=status, reason=reason, message=message, details=details)


def not_found(rt: ResourceType, name: str) -> KubernetesError:
    return api_error(
        404,
        "NotFound",
        f'{rt.plural}{"." + rt.group if rt.group else ""} "{name}" not found',
        name=name,
        group=rt.group,
        kind=rt.plural,
    )


@dataclasses.dataclass(frozen=True)
class Event:
    """One change, as a watch would stream it."""

    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None  # the previous state: selector-filtered watches need it


@dataclasses.dataclass
class DeleteOptions:
    propagation: str = "Background"
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None

    @classmethod
    def parse(cls, body: Any, params: dict[str, str]) -> DeleteOptions:
        body = body if isinstance(body, dict) else {}
        pre = body.get("preconditions") or {}
        grace = body.get("gracePeriodSeconds", params.get("gracePeriodSeconds"))
        propagation = body.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
        if body.get("orphanDependents") is True or params.get("orphanDependents") == "true":
            propagation = "Orphan"
        return cls(
            propagation=propagation,
            grace_period=int(grace) if grace is not None else None,
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
        )


class Store:
    """All objects, the global resourceVersion counter and the event log."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self.rv = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.log: list[Event] = []
        self._log_rvs: list[int] = []
        self.listeners: list[Callable[[], None]] = []
        self._cluster_ip = 0
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self._rt("", "namespaces"), None, {"metadata": {"name": ns}})

    # -- lookup ---------------------------------------------------------------------------

    def _rt(self, group: str, plural: str) -> ResourceType:
        rt = self.registry.by_key((group, plural))
        assert rt is not None, (group, plural)
        return rt

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault(rt.key, {})

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rt.namespaced else ""

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(rt).get((self._ns(rt, namespace), name))
        if obj is None:
            raise not_found(rt, name)
        return self.view(rt, obj)

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        obj = self._bucket(rt).get((self._ns(rt, namespace), name))
        return None if obj is None else self.view(rt, obj)

    def list_objects(self, rt: ResourceType, namespace: str | None) -> list[Obj]:
        items = [
            self.view(rt, obj)
            for (ns, _), obj in sorted(self._bucket(rt).items())
            if namespace is None or not rt.namespaced or ns == namespace
        ]
        return items

    @staticmethod
    def view(rt: ResourceType, obj: Obj) -> Obj:
        """An object as served in the version asked for (no conversion: same fields)."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        return {**obj, "apiVersion": rt.api_version}

    def all_objects(self) -> Iterator[tuple[ResourceType, Obj]]:
        for key, bucket in list(self.objects.items()):
            rt = self.registry.by_key(key)
            if rt is None:
                continue
            for obj in list(bucket.values()):
                yield rt, obj

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        for rt, obj in self.all_objects():
            if obj["metadata"].get("uid") == uid:
                return rt, obj
        return None

    # -- the event log --------------------------------------------------------------------

    def _commit(self, rt: ResourceType, type_: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj = dict(obj)
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(self.rv))
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if type_ == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        self.log.append(Event(self.rv, rt.key, type_, obj, old))
        self._log_rvs.append(self.rv)
        for listener in self.listeners:
            listener()
        return self.view(rt, obj)

    def events_since(self, rv: int) -> list[Event]:
        """Events with a resourceVersion greater than `rv`."""
        return self.log[bisect.bisect_right(self._log_rvs, rv) :]

    # -- create ---------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: Any, *, strict: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the body of the request must be a JSON object")
        obj: Obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise api_error(400, "BadRequest", "metadata must be an object")
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise api_error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or body_ns or "default"
            meta["namespace"] = namespace
            if self.find(self._rt("", "namespaces"), None, namespace) is None:
                raise api_error(
                    404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name")
        self._validate_name(rt, name)
        assert isinstance(name, str)
        if (self._ns(rt, namespace), name) in self._bucket(rt):
            raise api_error(
                409,
                "AlreadyExists",
                f'{rt.plural}{"." + rt.group if rt.group else ""} "{name}" already exists',
                name=name,
                group=rt.group,
                kind=rt.plural,
            )
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        if rt.has_status and not rt.builtin:
            obj.pop("status", None)  # custom resources: create cannot set status
        self._default(rt, obj)
        obj = self._custom_schema(rt, obj, strict=strict)
        result = self._commit(rt, "ADDED", obj, None)
        self._after_write(rt, result)
        if meta.get("ownerReferences"):
            self.collect_garbage()
        return self.find(rt, namespace, name) or result

    def _validate_name(self, rt: ResourceType, name: Any) -> None:
        if not name or not isinstance(name, str):
            raise api_error(
                422,
                "Invalid",
                f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required",
            )
        if (len(name) > 253 or not _NAME_RE.match(name)) and not (
            rt.plural == "customresourcedefinitions" and _NAME_RE.match(name.lower())
        ):
            raise api_error(
                422,
                "Invalid",
                f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
                "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            )

    def _custom_schema(self, rt: ResourceType, obj: Obj, *, strict: bool) -> Obj:
        if rt.builtin or rt.schema is None:
            return obj
        processed, unknown, errors = crd_schema.process(obj, rt.schema)
        name = obj.get("metadata", {}).get("name")
        if strict and unknown:
            errors = [f'unknown field "{path}"' for path in unknown] + errors
        if errors:
            raise api_error(
                422,
                "Invalid",
                f'{rt.kind}.{rt.group} "{name}" is invalid: ' + ", ".join(errors),
                name=name,
                group=rt.group,
                kind=rt.kind,
                causes=[{"message": e} for e in errors],
            )
        return processed

    def _default(self, rt: ResourceType, obj: Obj) -> None:
        """Defaults the API server fills in for the built-in types tests create."""
        spec = obj.setdefault("spec", {}) if rt.kind in _SPEC_KINDS and rt.builtin else obj.get("spec")
        if rt.key == ("", "pods"):
            assert isinstance(spec, dict)
            _default_pod_spec(spec)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rt.key == ("", "services") and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            if "clusterIP" not in spec:
                self._cluster_ip += 1
                spec["clusterIP"] = f"10.96.{self._cluster_ip // 250}.{self._cluster_ip % 250 + 1}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            obj["status"] = {"loadBalancer": {}}
        elif rt.key in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
            assert isinstance(spec, dict)
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            if rt.plural == "deployments":
                spec.setdefault(
                    "strategy",
                    {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                )
                spec.setdefault("progressDeadlineSeconds", 600)
            if rt.plural == "statefulsets":
                spec.setdefault("podManagementPolicy", "OrderedReady")
                spec.setdefault(
                    "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
                )
            _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
            obj["status"] = {}
        elif rt.key == ("batch", "jobs"):
            assert isinstance(spec, dict)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            uid = obj["metadata"]["uid"]
            template = spec.setdefault("template", {})
            tmeta = template.setdefault("metadata", {})
            labels = {
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                "job-name": obj["metadata"]["name"],
            }
            if not spec.get("manualSelector"):
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            tspec = template.setdefault("spec", {})
            _default_pod_spec(tspec)
            if tspec.get("restartPolicy") not in ("Never", "OnFailure"):
                raise api_error(
                    422,
                    "Invalid",
                    f'Job.batch "{obj["metadata"]["name"]}" is invalid: spec.template.spec.restartPolicy: '
                    'Required value: valid values: "OnFailure", "Never"',
                )
            obj["status"] = {}
        elif rt.key == ("", "namespaces"):
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif rt.key == ("", "persistentvolumeclaims") and isinstance(spec, dict):
            # No provisioner to wait for: claims are Bound at once (the kubelet maps them to a dir).
            requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            obj["status"] = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": requested},
            }
        elif rt.key == ("", "nodes"):
            obj.setdefault("status", {})
        elif rt.key == ("", "secrets"):
            obj.setdefault("type", "Opaque")
            if "stringData" in obj:
                import base64

                data = obj.setdefault("data", {})
                for k, v in obj.pop("stringData").items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._accept_crd(obj)

    def _accept_crd(self, crd: Obj, previous: Obj | None = None) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group")
        plural = names.get("plural")
        name = crd["metadata"].get("name")
        if not group or not plural or not names.get("kind") or not spec.get("versions"):
            raise api_error(
                422,
                "Invalid",
                f'{_CRD} "{name}" is invalid: spec.group, spec.names.plural, spec.names.kind '
                "and spec.versions are required",
            )
        if name != f"{plural}.{group}":
            raise api_error(
                422,
                "Invalid",
                f'{_CRD} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                'must be spec.names.plural+"."+spec.group',
            )
        if sum(1 for v in spec["versions"] if v.get("storage")) != 1:
            raise api_error(
                422,
                "Invalid",
                f'{_CRD} "{name}" is invalid: spec.versions: Invalid value: '
                "must have exactly one version marked as storage version",
            )
        accepted = {
            **names,
            "singular": names.get("singular") or names["kind"].lower(),
            "listKind": names.get("listKind") or names["kind"] + "List",
        }
        if previous and previous.get("acceptedNames") == accepted:
            crd["status"] = previous
            return
        crd["status"] = {
            "acceptedNames": accepted,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now(),
                },
            ],
        }

    def _after_write(self, rt: ResourceType, obj: Obj) -> None:
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.set_crd(obj)

    # -- update ---------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Any],
        *,
        subresource: str | None = None,
        strict: bool = False,
    ) -> Obj:
        """Read-modify-write one object with the API server's rules for what may change."""
        ns = self._ns(rt, namespace)
        old = self._bucket(rt).get((ns, name))
        if old is None:
            raise not_found(rt, name)
        new = mutate(copy.deepcopy(self.view(rt, old)))
        if not isinstance(new, dict):
            raise api_error(422, "Invalid", "the result of the update is not an object")
        new_meta = new.get("metadata")
        if not isinstance(new_meta, dict):
            new_meta = new["metadata"] = {}
        old_meta = old["metadata"]
        asked_rv = new_meta.get("resourceVersion")
        if asked_rv and asked_rv != old_meta.get("resourceVersion"):
            raise api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural}{"." + rt.group if rt.group else ""} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                name=name,
                group=rt.group,
                kind=rt.plural,
            )
        if subresource == "status":
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = new["status"]
            else:
                candidate.pop("status", None)
            new = candidate
            status_schema = (
                None if rt.builtin or rt.schema is None else (rt.schema.get("properties") or {}).get("status")
            )
            if status_schema is not None and "status" in new:
                new["status"] = crd_schema.prune(new["status"], status_schema, "status", [])
                errors: list[str] = []
                crd_schema.validate(new["status"], status_schema, "status", errors)
                if errors:
                    raise api_error(
                        422, "Invalid", f'{rt.kind}.{rt.group} "{name}" is invalid: ' + ", ".join(errors)
                    )
        else:
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            new = self._custom_schema(rt, new, strict=strict)
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._accept_crd(new, old.get("status"))
        new["apiVersion"] = old["apiVersion"]
        new["kind"] = rt.kind
        meta = new["metadata"]
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise api_error(
                    422,
                    "Invalid",
                    "Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {sorted(added)}",
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if not meta.get("ownerReferences"):
            meta.pop("ownerReferences", None)
        if new == old:
            return self.view(rt, old)
        if _spec_part(rt, new) != _spec_part(rt, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rt, new, old)
        result = self._commit(rt, "MODIFIED", new, old)
        self._after_write(rt, result)
        if meta.get("ownerReferences") != old_meta.get("ownerReferences"):
            self.collect_garbage()
        return result

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: DeleteOptions | None = None
    ) -> Obj:
        options = options or DeleteOptions()
        ns = self._ns(rt, namespace)
        obj = self._bucket(rt).get((ns, name))
        if obj is None:
            raise not_found(rt, name)
        meta = obj["metadata"]
        if options.precondition_uid and options.precondition_uid != meta.get("uid"):
            raise api_error(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
            raise api_error(409, "Conflict", "Precondition failed: resourceVersion mismatch")
        finalizers = list(meta.get("finalizers") or [])
        if options.propagation == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if options.propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        grace = self._grace_period(rt, obj, options)
        if meta.get("deletionTimestamp"):
            # Already terminating: a shorter grace period (e.g. the kubelet's 0) finishes it.
            if grace == 0 and not finalizers and rt.key == ("", "pods"):
                return self._remove(rt, obj, obj)
            return self.view(rt, obj)
        if finalizers or grace or rt.key == ("", "namespaces"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            if grace:
                new["metadata"]["deletionGracePeriodSeconds"] = grace
            if rt.key == ("", "namespaces"):
                new["status"] = {"phase": "Terminating"}
            result = self._commit(rt, "MODIFIED", new, obj)
            if options.propagation == "Foreground" or rt.key == ("", "namespaces"):
                self.collect_garbage()
            return result
        return self._remove(rt, obj, obj)

    def _grace_period(self, rt: ResourceType, obj: Obj, options: DeleteOptions) -> int:
        """Pods on a node a kubelet runs terminate gracefully: the kubelet finishes deletion."""
        if rt.key != ("", "pods") or options.grace_period == 0:
            return 0
        node = (obj.get("spec") or {}).get("nodeName")
        if not node or self.find(self._rt("", "nodes"), None, node) is None:
            return 0
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if options.grace_period is not None:
            return options.grace_period
        return int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)) or 1

    def _remove(self, rt: ResourceType, obj: Obj, old: Obj) -> Obj:
        result = self._commit(rt, "DELETED", obj, old)
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            crd_spec = obj.get("spec") or {}
            key = (crd_spec.get("group", ""), (crd_spec.get("names") or {}).get("plural", ""))
            self.objects.pop(key, None)
            self.registry.remove_crd(obj["metadata"]["name"])
        self.collect_garbage()
        return result

    def _orphan_dependents(self, uid: str) -> None:
        for rt, obj in self.all_objects():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                kept = [ref for ref in refs if ref.get("uid") != uid]
                self.update(
                    rt,
                    obj["metadata"].get("namespace"),
                    obj["metadata"]["name"],
                    functools.partial(_with_owner_refs, refs=kept),
                )

    # -- garbage collection ---------------------------------------------------------------

    def collect_garbage(self) -> None:
        """Delete dependents of vanished owners; finish foreground and namespace deletions."""
        for _ in range(100):
            if not self._gc_pass():
                return

    def _gc_pass(self) -> bool:
        uids: dict[str, Obj] = {obj["metadata"]["uid"]: obj for _, obj in self.all_objects()}
        changed = False
        namespaces = {
            obj["metadata"]["name"]: obj for obj in self._bucket(self._rt("", "namespaces")).values()
        }
        for rt, obj in list(self.all_objects()):
            meta = obj["metadata"]
            ns, name = meta.get("namespace"), meta["name"]
            if self._bucket(rt).get((ns or "", name)) is not obj:
                continue  # changed earlier in this pass
            refs = meta.get("ownerReferences") or []
            owners = [uids.get(ref.get("uid")) for ref in refs]
            if refs and all(owner is None for owner in owners) and not meta.get("deletionTimestamp"):
                self.delete(rt, ns, name)
                changed = True
                continue
            if (
                refs
                and not meta.get("deletionTimestamp")
                and any(
                    owner is not None
                    and FOREGROUND in (owner["metadata"].get("finalizers") or [])
                    and owner["metadata"].get("deletionTimestamp")
                    for owner in owners
                )
            ):
                self.delete(rt, ns, name)
                changed = True
                continue
            if (
                rt.namespaced
                and ns in namespaces
                and namespaces[ns]["metadata"].get("deletionTimestamp")
                and not meta.get("deletionTimestamp")
            ):
                self.delete(rt, ns, name)
                changed = True
                continue
            if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
                uid = meta["uid"]
                if not any(
                    uid in {r.get("uid") for r in (o["metadata"].get("ownerReferences") or [])}
                    for _, o in self.all_objects()
                ):
                    self.update(rt, ns, name, _drop_finalizer(FOREGROUND))
                    changed = True
                    continue
            if (
                rt.key == ("", "namespaces")
                and meta.get("deletionTimestamp")
                and not any(
                    o["metadata"].get("namespace") == name for r, o in self.all_objects() if r.namespaced
                )
            ):
                self._remove(rt, obj, obj)
                changed = True
        return changed


_SPEC_KINDS = {"Pod", "Deployment", "StatefulSet", "ReplicaSet", "Job", "Service", "DaemonSet"}


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")


def _spec_part(rt: ResourceType, obj: Obj) -> Obj:
    skip = {"metadata", "status"} if rt.has_status else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _with_owner_refs(obj: Obj, refs: list[Any]) -> Obj:
    obj["metadata"]["ownerReferences"] = refs
    return obj


def _drop_finalizer(finalizer: str) -> Callable[[Obj], Obj]:
    def mutate(obj: Obj) -> Obj:
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        return obj

    return mutate
