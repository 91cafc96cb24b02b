"""How the process kubelet translates a container spec: argv, env, mounts, Service DNS."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import pytest

from . import podspec
from .emulator.patching import strategic_merge_patch
from .emulator.selectors import labels_match, parse_label_selector

POD: dict[str, Any] = {
    "metadata": {"name": "w-1", "namespace": "ns", "uid": "u1", "labels": {"app": "w"}},
    "spec": {"nodeName": "node-a"},
    "status": {"podIP": "127.0.0.9"},
}


def test_kubevine_image_maps_the_first_word_to_the_venv_console_script(tmp_path: pathlib.Path) -> None:
    argv = podspec.container_argv(
        {"image": "ghcr.io/x/kubevine:1", "args": ["worker", "--cores", "2"]}, "127.0.0.9", tmp_path
    )
    assert pathlib.Path(argv[0]).name == "kubevine" and argv[1:] == ["worker", "--cores", "2"]


def test_redis_image_binds_the_pod_ip(tmp_path: pathlib.Path) -> None:
    argv = podspec.container_argv(
        {"image": "redis:7", "command": ["redis-server"], "args": ["--appendonly", "yes"]},
        "127.0.0.9",
        tmp_path,
    )
    assert argv[0] == podspec.REDIS_SERVER and argv[1:3] == ["--appendonly", "yes"]
    assert argv[argv.index("--bind") + 1] == "127.0.0.9"


def test_other_images_are_not_runnable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(podspec.NotRunnable) as e:
        podspec.container_argv({"image": "nginx"}, "127.0.0.9", tmp_path)
    assert e.value.reason == "ErrImageNeverPull"


def test_env_resolves_field_refs_secrets_and_var_expansion_in_order() -> None:
    secret = {"data": {"pw": base64.b64encode(b"hunter2").decode()}}
    container = {
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "URL", "value": "tcp://$(IP):9000/$(LATER)$$(IP)"},
            {"name": "LATER", "value": "x"},
        ]
    }
    env = podspec.container_env(
        POD, container, lambda kind, name: secret if (kind, name) == ("secret", "s") else None
    )
    assert env == {
        "IP": "127.0.0.9",
        "NODE": "node-a",
        "APP": "w",
        "PW": "hunter2",
        "URL": "tcp://127.0.0.9:9000/$(LATER)$(IP)",
        "LATER": "x",
    }
    with pytest.raises(podspec.MissingReference):
        podspec.container_env(
            POD,
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
            lambda kind, name: None,
        )


def test_mount_paths_are_rewritten_only_as_path_prefixes(tmp_path: pathlib.Path) -> None:
    mounts = [
        podspec.Mount("/cache", tmp_path / "c", "cache"),
        podspec.Mount("/cache/deep", tmp_path / "d", "deep"),
    ]
    mounts.sort(key=lambda m: len(m.mount_path), reverse=True)
    assert podspec.rewrite_paths("/cache/x", mounts) == f"{tmp_path}/c/x"
    assert podspec.rewrite_paths("--dir=/cache/deep/y", mounts) == f"--dir={tmp_path}/d/y"
    assert podspec.rewrite_paths("/cachex /var/cache", mounts) == "/cachex /var/cache"


def test_a_rewritten_path_is_not_rewritten_again_by_another_mount() -> None:
    # The kubelet's directories usually live under /tmp, and /tmp is a mount path too.
    mounts = [
        podspec.Mount("/data", pathlib.Path("/tmp/kubelet/claims/data-0"), "data"),
        podspec.Mount("/tmp", pathlib.Path("/tmp/kubelet/pods/p/tmp"), "tmp"),
    ]
    assert podspec.rewrite_paths("/data", mounts) == "/tmp/kubelet/claims/data-0"
    both = podspec.rewrite_paths("/tmp/x /data/y", mounts)
    assert both == "/tmp/kubelet/pods/p/tmp/x /tmp/kubelet/claims/data-0/y"


def test_service_names_are_rewritten_in_urls_hostports_and_flags() -> None:
    svc = [podspec.ServiceTarget("ns", "redis", {6379: 6380}, "127.0.0.5")]
    rewrite = podspec.rewrite_service
    assert rewrite("redis://redis:6379/0", svc, "ns") == "redis://127.0.0.5:6380/0"
    assert rewrite("redis.ns.svc.cluster.local:6379", svc, "ns") == "127.0.0.5:6380"
    assert rewrite("--store=redis.ns:6379", svc, "ns") == "--store=127.0.0.5:6380"
    assert rewrite("redis", svc, "ns") == "127.0.0.5"
    assert rewrite("redis", svc, "ns", bare=False) == "redis"  # an ordinary word stays
    assert rewrite("redis://redis:6379/0", svc, "other") == "redis://redis:6379/0"  # not its namespace
    with pytest.raises(podspec.UnresolvedService):
        rewrite("redis:6379", [podspec.ServiceTarget("ns", "redis", {}, None)], "ns")


def test_strategic_merge_merges_containers_and_env_by_name() -> None:
    current = {
        "spec": {
            "containers": [
                {"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "1"},
            ]
        }
    }
    patch = {
        "spec": {
            "containers": [
                {"name": "a", "env": [{"name": "Y", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
            ]
        }
    }
    merged = strategic_merge_patch(current, patch)
    assert merged == {
        "spec": {
            "containers": [
                {"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]
        }
    }


def test_label_selector_grammar() -> None:
    reqs = parse_label_selector("app=w,tier in (a, b),!legacy,env!=prod")
    assert labels_match(reqs, {"metadata": {"labels": {"app": "w", "tier": "b"}}})
    assert not labels_match(reqs, {"metadata": {"labels": {"app": "w", "tier": "b", "legacy": "1"}}})


def test_a_service_dns_name_waits_for_its_service_to_exist() -> None:
    with pytest.raises(podspec.UnresolvedService):
        podspec.rewrite_service("wf-manager.default.svc:9123", [], "default")
    with pytest.raises(podspec.UnresolvedService):
        podspec.rewrite_service("redis://db.data.svc.cluster.local:6379/0", [], "default")
    assert podspec.rewrite_service("example.com:443", [], "default") == "example.com:443"
    assert podspec.rewrite_service("wf-manager.default:9123", [], "default") == "wf-manager.default:9123"
