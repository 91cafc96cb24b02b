"""The Kubernetes API emulator behaves like an API server for kubectl, kopf and the python client."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from .emulator import KubeAPI, Store
from .helpers import KUBECTL_BINARIES, get, kubectl, kubectl_json, wait_for

Watch: Any = kubernetes.watch.Watch  # untyped in the client
GROUP = "example.kubevine.io"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["kubevine"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0, "default": 1},
                                    "colour": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": spec,
    }


def write_yaml(path: pathlib.Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


@pytest.fixture
def widgets(kube_api: KubeAPI, tmp_path: pathlib.Path) -> KubeAPI:
    """The emulator with the Widget CRD applied."""
    kubectl(kube_api, "apply", "-f", write_yaml(tmp_path / "crd.yaml", CRD))
    return kube_api


@pytest.fixture
def client(kube_api: KubeAPI) -> Iterator[Any]:
    api_client = kube_api.api_client()
    yield api_client
    api_client.close()


@pytest.mark.parametrize("binary", list(KUBECTL_BINARIES.values()), ids=list(KUBECTL_BINARIES))
def test_kubectl_applies_a_crd_and_a_custom_resource_then_gets_and_deletes_it(
    kube_api: KubeAPI, tmp_path: pathlib.Path, binary: str
) -> None:
    out = kubectl(kube_api, "apply", "-f", write_yaml(tmp_path / "crd.yaml", CRD), binary=binary).stdout
    assert f"customresourcedefinition.apiextensions.k8s.io/widgets.{GROUP} created" in out
    out = kubectl(
        kube_api, "apply", "-f", write_yaml(tmp_path / "w.yaml", widget("w1", size=3)), binary=binary
    ).stdout
    assert f"widget.{GROUP}/w1 created" in out
    again = kubectl(kube_api, "apply", "-f", str(tmp_path / "w.yaml"), binary=binary).stdout
    assert "unchanged" in again

    def set_running(store: Store) -> object:
        rt = store.registry.get(GROUP, "v1alpha1", "widgets")
        assert rt is not None
        return store.update(
            rt, "default", "w1", lambda o: {**o, "status": {"phase": "Running"}}, subresource="status"
        )

    kube_api.call(set_running)
    table = kubectl(kube_api, "get", "wd", binary=binary).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SIZE", "AGE"]
    assert table[1].split()[:3] == ["w1", "Running", "3"]
    assert "w1" in kubectl(kube_api, "get", "kubevine", binary=binary).stdout  # by category

    obj = kubectl_json(kube_api, "get", "widget", "w1", binary=binary)
    assert obj["kind"] == "Widget" and obj["spec"] == {"size": 3}
    meta = obj["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"] and meta["generation"] == 1
    listing = kubectl_json(kube_api, "get", "widgets", binary=binary)
    assert listing["kind"] == "List" and [i["metadata"]["name"] for i in listing["items"]] == ["w1"]

    out = kubectl(kube_api, "delete", "widget", "w1", binary=binary).stdout
    assert 'widget.example.kubevine.io "w1" deleted' in out
    assert get(kube_api, f"/apis/{GROUP}/v1alpha1/namespaces/default/widgets/w1") is None


def test_kubectl_apply_reconfigures_a_deployment_with_a_strategic_merge(
    kube_api: KubeAPI, tmp_path: pathlib.Path
) -> None:
    def deploy(b_value: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "kubevine:dev",
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": b_value}],
                            }
                        ]
                    },
                },
            },
        }

    kubectl(kube_api, "apply", "-f", write_yaml(tmp_path / "d1.yaml", deploy("2")))
    out = kubectl(kube_api, "apply", "-f", write_yaml(tmp_path / "d2.yaml", deploy("3"))).stdout
    assert "deployment.apps/web configured" in out
    obj = kubectl_json(kube_api, "get", "deployment", "web")
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
    ]
    assert obj["metadata"]["generation"] == 2
    assert obj["spec"]["replicas"] == 1  # defaulted by the API server


def test_python_client_lists_and_watches_from_a_resource_version(client: Any) -> None:
    v1: Any = kubernetes.client.CoreV1Api(client)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "before"}, "data": {"x": "1"}})
    listing = v1.list_namespaced_config_map("default")
    assert [cm.metadata.name for cm in listing.items] == ["before"]
    since = listing.metadata.resource_version
    v1.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    v1.patch_namespaced_config_map("before", "default", {"data": {"x": "2"}})
    v1.delete_namespaced_config_map("after", "default")
    events = []
    for event in Watch().stream(
        v1.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=1
    ):
        events.append((event["type"], event["object"].metadata.name))
    assert events == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]

    initial = [
        (e["type"], e["object"].metadata.name)
        for e in Watch().stream(v1.list_namespaced_config_map, "default", timeout_seconds=1)
    ]
    assert initial == [("ADDED", "before")]  # no resourceVersion: the current state first


def test_label_and_field_selectors_filter_lists_and_watches(client: Any) -> None:
    v1: Any = kubernetes.client.CoreV1Api(client)
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}), ("c", {})):
        v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: Any) -> list[str]:
        return [cm.metadata.name for cm in v1.list_namespaced_config_map("default", **kwargs).items]

    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier in (web,db)") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier,env notin (dev)") == ["a", "b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]

    since = v1.list_namespaced_config_map("default").metadata.resource_version
    v1.patch_namespaced_config_map("c", "default", {"metadata": {"labels": {"tier": "web"}}})
    v1.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"tier": "cache"}}})
    events = [
        (e["type"], e["object"].metadata.name)
        for e in Watch().stream(
            v1.list_namespaced_config_map,
            "default",
            label_selector="tier=web",
            resource_version=since,
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "c"), ("DELETED", "a")]  # entering and leaving the selection


def test_status_subresource_isolates_status_and_generation_counts_spec_changes(
    widgets: KubeAPI, client: Any
) -> None:
    api: Any = kubernetes.client.CustomObjectsApi(client)
    args = (GROUP, "v1alpha1", "default", "widgets")
    created = api.create_namespaced_custom_object(
        *args, {**widget("w", size=2), "status": {"phase": "Bogus"}}
    )
    assert "status" not in created  # create cannot set status
    assert created["metadata"]["generation"] == 1

    after_status = api.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"phase": "Ready"}, "spec": {"size": 9}}
    )
    assert after_status["status"] == {"phase": "Ready"} and after_status["spec"]["size"] == 2
    assert after_status["metadata"]["generation"] == 1  # status writes never bump generation

    after_spec = api.patch_namespaced_custom_object(
        *args, "w", {"spec": {"size": 5}, "status": {"phase": "Ignored"}}
    )
    assert after_spec["spec"]["size"] == 5 and after_spec["status"] == {"phase": "Ready"}
    assert after_spec["metadata"]["generation"] == 2

    labelled = api.patch_namespaced_custom_object(*args, "w", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 2  # metadata changes do not count
    assert int(labelled["metadata"]["resourceVersion"]) > int(after_spec["metadata"]["resourceVersion"])

    replaced = api.replace_namespaced_custom_object(*args, "w", {**labelled, "spec": {"size": 6}})
    assert replaced["metadata"]["generation"] == 3
    with pytest.raises(kubernetes.client.ApiException) as stale:
        api.replace_namespaced_custom_object(*args, "w", labelled)  # an old resourceVersion
    assert stale.value.status == 409


def test_crd_schema_defaults_and_rejects_invalid_or_unknown_fields(
    widgets: KubeAPI, tmp_path: pathlib.Path, client: Any
) -> None:
    api: Any = kubernetes.client.CustomObjectsApi(client)
    args = (GROUP, "v1alpha1", "default", "widgets")
    made = api.create_namespaced_custom_object(*args, widget("d", colour="red", extra="dropped"))
    assert made["spec"] == {"size": 1, "colour": "red"}  # defaulted and pruned
    with pytest.raises(kubernetes.client.ApiException) as invalid:
        api.create_namespaced_custom_object(*args, widget("bad", size=-1, colour="green"))
    assert invalid.value.status == 422
    message = json.loads(str(invalid.value.body))["message"]
    assert "spec.size" in message and "spec.colour" in message

    result = kubectl(
        widgets, "apply", "-f", write_yaml(tmp_path / "u.yaml", widget("u", sizee=3)), check=False
    )
    assert result.returncode != 0 and 'unknown field "spec.sizee"' in result.stderr


def test_failed_json_patch_test_operation_answers_422(client: Any) -> None:
    v1: Any = kubernetes.client.CoreV1Api(client)
    cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "p"}})
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "stale"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    with pytest.raises(kubernetes.client.ApiException) as failed:
        v1.patch_namespaced_config_map("p", "default", ops)
    assert failed.value.status == 422
    ops[0]["value"] = cm.metadata.resource_version
    patched = v1.patch_namespaced_config_map("p", "default", ops)
    assert patched.metadata.finalizers == ["x/y"]


def owned_map(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_deleting_an_owner_garbage_collects_its_dependents(widgets: KubeAPI, client: Any) -> None:
    custom: Any = kubernetes.client.CustomObjectsApi(client)
    v1: Any = kubernetes.client.CoreV1Api(client)
    args = (GROUP, "v1alpha1", "default", "widgets")
    for name in ("bg", "fg", "orphaner"):
        owner = custom.create_namespaced_custom_object(*args, widget(name))
        child = v1.create_namespaced_config_map("default", owned_map(f"{name}-child", owner))
        v1.create_namespaced_config_map(
            "default",
            owned_map(
                f"{name}-grandchild",
                child.to_dict()
                | {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": child.metadata.name, "uid": child.metadata.uid},
                },
            ),
        )

    def exists(name: str) -> bool:
        return get(widgets, f"/api/v1/namespaces/default/configmaps/{name}") is not None

    custom.delete_namespaced_custom_object(*args, "bg")
    assert not exists("bg-child") and not exists("bg-grandchild")
    custom.delete_namespaced_custom_object(*args, "fg", body={"propagationPolicy": "Foreground"})
    assert not exists("fg-child") and not exists("fg-grandchild")
    assert get(widgets, f"/apis/{GROUP}/v1alpha1/namespaces/default/widgets/fg") is None
    custom.delete_namespaced_custom_object(*args, "orphaner", body={"propagationPolicy": "Orphan"})
    assert exists("orphaner-child") and exists("orphaner-grandchild")
    assert (
        "ownerReferences"
        not in get(widgets, "/api/v1/namespaces/default/configmaps/orphaner-child")["metadata"]
    )


def test_finalizers_block_deletion_until_they_are_removed(widgets: KubeAPI, client: Any) -> None:
    custom: Any = kubernetes.client.CustomObjectsApi(client)
    args = (GROUP, "v1alpha1", "default", "widgets")
    body = widget("held")
    body["metadata"]["finalizers"] = ["example.kubevine.io/cleanup"]
    custom.create_namespaced_custom_object(*args, body)
    custom.delete_namespaced_custom_object(*args, "held")
    held = custom.get_namespaced_custom_object(*args, "held")
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.patch_namespaced_custom_object(
            *args, "held", {"metadata": {"finalizers": ["a/b", "example.kubevine.io/cleanup"]}}
        )
    assert refused.value.status == 422  # no new finalizers on an object being deleted
    custom.patch_namespaced_custom_object(*args, "held", {"metadata": {"finalizers": None}})
    assert get(widgets, f"/apis/{GROUP}/v1alpha1/namespaces/default/widgets/held") is None


def test_deleting_a_namespace_deletes_its_objects(kube_api: KubeAPI, tmp_path: pathlib.Path) -> None:
    kubectl(
        kube_api,
        "apply",
        "-f",
        write_yaml(
            tmp_path / "ns.yaml",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "scratch"}},
        ),
    )
    kubectl(kube_api, "delete", "namespace", "scratch", "--wait=true")
    assert get(kube_api, "/api/v1/namespaces/scratch/configmaps/c") is None
    missing = kubectl(
        kube_api,
        "apply",
        "-f",
        write_yaml(
            tmp_path / "c.yaml",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "scratch"}},
        ),
        check=False,
    )
    assert missing.returncode != 0 and 'namespaces "scratch" not found' in missing.stderr


def test_events_and_leases_can_be_created(client: Any) -> None:
    v1: Any = kubernetes.client.CoreV1Api(client)
    v1.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "w-"},
            "reason": "Scaled",
            "message": "0 -> 3",
            "type": "Normal",
            "involvedObject": {"kind": "Widget", "name": "w"},
        },
    )
    events_v1: Any = kubernetes.client.EventsV1Api(client)
    events_v1.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e2"},
            "reason": "Scaled",
            "note": "3 -> 0",
            "action": "Scale",
            "type": "Normal",
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "reportingController": "kubevine",
            "reportingInstance": "x",
        },
    )
    coordination: Any = kubernetes.client.CoordinationV1Api(client)
    lease = coordination.create_namespaced_lease(
        "default",
        {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}},
    )
    assert lease.spec.holder_identity == "me"
    [event] = v1.list_namespaced_event("default").items
    assert event.metadata.name.startswith("w-") and event.reason == "Scaled"


def test_emulator_runs_as_a_subprocess_that_writes_a_kubeconfig(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with open(tmp_path / "emulator.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.kube.emulator", "--port", "0", "--kubeconfig-out", str(kubeconfig)],
            cwd=pathlib.Path(__file__).parents[2],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(kubeconfig.exists, timeout=15, what="the kubeconfig")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
        out = subprocess.run(
            [next(iter(KUBECTL_BINARIES.values())), "get", "namespaces"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "default" in out and "kube-system" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0


OPERATOR = textwrap.dedent('''
    """A minimal real kopf operator: a Widget gets an owned ConfigMap and a status."""
    import kopf
    import kubernetes

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 30
        settings.posting.level = 0

    @kopf.on.create("example.kubevine.io", "v1alpha1", "widgets")
    def create_fn(name, namespace, spec, patch, **_):
        kubernetes.config.load_kube_config()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config"},
              "data": {"size": str(spec.get("size"))}}
        kopf.adopt(cm)
        kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, cm)
        patch.status["phase"] = "Ready"
        return {"configmap": f"{name}-config"}

    @kopf.on.delete("example.kubevine.io", "v1alpha1", "widgets")
    def delete_fn(name, logger, **_):
        logger.info("widget %s deleted", name)
''')


def test_kopf_operator_adopts_a_child_sets_status_and_is_cleaned_up_on_delete(
    widgets: KubeAPI, tmp_path: pathlib.Path
) -> None:
    module = tmp_path / "widget_operator.py"  # never operator.py: it would shadow the stdlib module
    module.write_text(OPERATOR)
    log = tmp_path / "kopf.log"
    kopf = str(pathlib.Path(sys.executable).parent / "kopf")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [kopf, "run", "--standalone", "--namespace", "default", str(module)],
            env=widgets.env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        kubectl(widgets, "apply", "-f", write_yaml(tmp_path / "w.yaml", widget("w1", size=4)))
        url = f"/apis/{GROUP}/v1alpha1/namespaces/default/widgets/w1"
        cm = wait_for(
            lambda: get(widgets, "/api/v1/namespaces/default/configmaps/w1-config"),
            timeout=20,
            what=f"the owned ConfigMap; kopf log:\n{log.read_text()[-3000:]}",
        )
        owner = get(widgets, url)
        assert cm["data"] == {"size": "4"}
        assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]

        def ready_widget() -> Any:
            found = get(widgets, url)
            return found if (found.get("status") or {}).get("phase") == "Ready" else None

        done = wait_for(
            ready_widget,
            timeout=20,
            what="status.phase=Ready",
        )
        assert done["status"]["create_fn"] == {"configmap": "w1-config"}
        assert done["metadata"]["finalizers"]  # kopf guards deletion with its finalizer

        kubectl(widgets, "delete", "widget", "w1", "--wait=true", timeout=30)
        assert get(widgets, url) is None  # kopf ran the delete handler and released its finalizer
        assert get(widgets, "/api/v1/namespaces/default/configmaps/w1-config") is None  # garbage-collected
        assert "widget w1 deleted" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_kmock_reactions_still_take_precedence_for_fault_injection(kube_api: KubeAPI, client: Any) -> None:
    import kmock

    v1: Any = kubernetes.client.CoreV1Api(client)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "f"}})
    assert kube_api.handler is not None
    kube_api.handler[kmock.method.PATCH] << 503
    with pytest.raises(kubernetes.client.ApiException) as injected:
        v1.patch_namespaced_config_map("f", "default", {"data": {"x": "1"}})
    assert injected.value.status == 503
    assert v1.read_namespaced_config_map("f", "default").data is None  # the store never saw the patch
    assert any(r.method == kmock.method.PATCH for r in kube_api.handler)  # kmock's request log
