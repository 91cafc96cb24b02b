"""Turning a container of a pod spec into a local process: argv, env, volumes, DNS.

Pure functions (no I/O besides creating volume directories), so the process kubelet's
translation rules can be read and tested on their own:

- images: an image whose name contains `kubevine` runs its command with the first word
  `kubevine` mapped to the venv's console script (no command: `kubevine` + args, the
  image's entry point); `python`/`python3` map to the venv's interpreter. An image whose
  name contains `redis` runs the local `/usr/bin/redis-server` bound to the pod IP.
  Any other image is not runnable.
- env: `value`, `valueFrom` (fieldRef, resourceFieldRef, secretKeyRef, configMapKeyRef),
  `envFrom`, and `$(VAR)` expansion in env, command and args as Kubernetes does.
- volumes: processes cannot be chrooted, so mount paths are rewritten to real local
  directories wherever they appear as a path prefix in env values and args.
- Service DNS: a value that is a Service hostname (alone, with `:port`, after `--flag=`
  or as the host of a URL) is rewritten to the IP of a Ready pod behind the Service.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]

VENV_BIN = pathlib.Path(sys.executable).parent
REDIS_SERVER = "/usr/bin/redis-server"


class NotRunnable(Exception):
    """The container cannot run as a local process; the message is the pod's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# -- argv ------------------------------------------------------------------------------------


def _local(word: str) -> str:
    if word == "kubevine":
        script = VENV_BIN / "kubevine"
        return str(script) if script.exists() else word
    if word in ("python", "python3", f"python3.{sys.version_info.minor}"):
        return sys.executable
    return word


def container_argv(container: Mapping[str, Any], pod_ip: str, workdir: pathlib.Path) -> list[str]:
    """The local command line for a container (before path and DNS rewriting)."""
    image = str(container.get("image") or "")
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if "kubevine" in image:
        argv = command + args if command else ["kubevine", *args]
        if not argv:
            raise NotRunnable("CreateContainerError", "the kubevine image needs a command or args")
        return [_local(argv[0]), *argv[1:]]
    if "redis" in image:
        words = command + args
        if words and "redis-server" in words[0]:
            words = words[1:]
        elif command:
            raise NotRunnable(
                "CreateContainerError",
                f"the process kubelet runs redis images as redis-server only, not {command[0]!r}",
            )
        extra = []
        if "--bind" not in words:
            extra += ["--bind", pod_ip]
        if "--dir" not in words:
            extra += ["--dir", str(workdir)]
        if "--daemonize" not in words:
            extra += ["--daemonize", "no"]
        if not pathlib.Path(REDIS_SERVER).exists():
            raise NotRunnable("ErrImagePull", f"{REDIS_SERVER} is not installed")
        return [REDIS_SERVER, *words, *extra]
    raise NotRunnable(
        "ErrImageNeverPull",
        f"image {image!r} cannot run here: the process kubelet runs images whose name contains "
        "'kubevine' (as the local kubevine CLI) or 'redis' (as /usr/bin/redis-server)",
    )


def local_command(words: list[str]) -> list[str]:
    """An exec probe's or preStop hook's command, with the same mapping as a container's."""
    if not words:
        return words
    first = _local(words[0])
    if first == words[0] and not os.path.isabs(first) and shutil.which(first) is None:
        return words
    return [first, *words[1:]]


# -- env -------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_RE.sub(sub, text)


def _quantity(value: str) -> float:
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value).strip())
    if not m:
        return 0.0
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def field_ref(pod: Obj, path: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": status.get("podIP"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.hostIPs": status.get("hostIP", "127.0.0.1"),
    }
    return str(simple.get(path) or "")


def resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, what = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(what) or (resources.get("limits") or {}).get(what)
    if value is None:
        value = str(os.cpu_count() or 1) if what == "cpu" else str(16 * 2**30)
    divisor = _quantity(ref.get("divisor", "1")) or 1.0
    amount = _quantity(str(value)) / divisor
    return str(int(-(-amount // 1)))  # Kubernetes rounds up


def _key_of(obj: Obj | None, key: str, *, secret: bool) -> str | None:
    if obj is None:
        return None
    if secret:
        raw = (obj.get("data") or {}).get(key)
        return base64.b64decode(raw).decode(errors="replace") if raw is not None else None
    value = (obj.get("data") or {}).get(key)
    return str(value) if value is not None else None


class MissingReference(Exception):
    """A referenced Secret/ConfigMap (or key) is missing: the container cannot start yet."""


class MountFailed(Exception):
    """A volume cannot be set up yet (a hostPath of type `Directory` that does not exist):
    the pod waits in ContainerCreating and the kubelet tries again, as a real one does."""


def container_env(
    pod: Obj,
    container: Mapping[str, Any],
    lookup: Callable[[str, str], Obj | None],
) -> dict[str, str]:
    """The container's environment as Kubernetes computes it (envFrom, then env in order).

    `lookup(kind, name)` returns a Secret ("secret") or ConfigMap ("configmap") of the
    pod's namespace, or None.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            obj = lookup(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise MissingReference(f'{kind} "{ref.get("name")}" not found')
            for key in obj.get("data") or {}:
                found = _key_of(obj, key, secret=kind == "secret")
                if found is not None:
                    env[prefix + key] = found
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_ref(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            value = resource_ref(container, source["resourceFieldRef"])
        else:
            kind, ref = (
                ("secret", source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("configmap", source.get("configMapKeyRef") or {})
            )
            value = _key_of(lookup(kind, ref.get("name", "")), ref.get("key", ""), secret=kind == "secret")
            if value is None:
                if ref.get("optional"):
                    continue
                raise MissingReference(f'{kind} "{ref.get("name")}" or its key "{ref.get("key")}" not found')
        env[name] = value
    return env


# -- volumes ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Mount:
    mount_path: str
    local: pathlib.Path
    volume: str


def prepare_volumes(
    pod: Obj,
    root: pathlib.Path,
    pod_dir: pathlib.Path,
    lookup: Callable[[str, str], Obj | None],
) -> dict[str, pathlib.Path]:
    """Create each volume's local directory; return volume name → directory."""
    meta, spec = pod["metadata"], pod["spec"]
    node = spec.get("nodeName") or "unscheduled"
    result: dict[str, pathlib.Path] = {}
    for vol in spec.get("volumes") or []:
        name = vol["name"]
        if "hostPath" in vol:
            host_path = str(vol["hostPath"].get("path", "/")).lstrip("/")
            local = root / "nodes" / node / host_path
            kind = vol["hostPath"].get("type") or ""
            if kind == "Directory" and not local.is_dir():
                raise MountFailed(
                    f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: '
                    f"/{host_path} is not a directory"
                )
            if kind in ("File", "FileOrCreate", "Socket", "CharDevice", "BlockDevice"):
                local.parent.mkdir(parents=True, exist_ok=True)
                if kind == "FileOrCreate":
                    local.touch(exist_ok=True)
            else:
                local.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName", name)
            local = root / "claims" / meta.get("namespace", "default") / claim
            local.mkdir(parents=True, exist_ok=True)
        elif "secret" in vol or "configMap" in vol:
            secret = "secret" in vol
            source = vol["secret" if secret else "configMap"]
            obj_name = source.get("secretName" if secret else "name", "")
            obj = lookup("secret" if secret else "configmap", obj_name)
            if obj is None and not source.get("optional"):
                raise MissingReference(f'{"secret" if secret else "configmap"} "{obj_name}" not found')
            local = pod_dir / "volumes" / name
            local.mkdir(parents=True, exist_ok=True)
            data = dict((obj or {}).get("data") or {})
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    continue
                target = local / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                raw = data[item["key"]]
                target.write_bytes(base64.b64decode(raw) if secret else str(raw).encode())
                target.chmod(int(item.get("mode", source.get("defaultMode", 0o644))))
        elif "projected" in vol or "downwardAPI" in vol:
            local = pod_dir / "volumes" / name
            local.mkdir(parents=True, exist_ok=True)
            sources = (vol.get("projected") or {}).get("sources") or [{"downwardAPI": vol.get("downwardAPI")}]
            for path_, content in _projected_files(pod, sources, lookup).items():
                target = local / path_
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        else:  # emptyDir and anything else: a private directory, writable by anyone (as a kubelet makes it)
            local = pod_dir / "volumes" / name
            local.mkdir(parents=True, exist_ok=True)
            local.chmod(0o777)
        result[name] = local
    return result


def _projected_files(
    pod: Obj, sources: list[Obj], lookup: Callable[[str, str], Obj | None]
) -> dict[str, bytes]:
    """The files of a projected (or downwardAPI) volume: path → content.

    A serviceAccountToken source reads `lookup("serviceaccounttoken", audience)`, whose
    `token` the kubelet obtained from the TokenRequest API (None: no token, e.g. in the
    emulator, which issues none).
    """
    files: dict[str, bytes] = {}
    for source in sources:
        if source.get("serviceAccountToken"):
            spec = source["serviceAccountToken"]
            token = lookup("serviceaccounttoken", str(spec.get("audience") or ""))
            if token is not None:
                files[str(spec.get("path", "token"))] = str(token["token"]).encode()
        for kind, secret in (("secret", True), ("configMap", False)):
            if not source.get(kind):
                continue
            ref = source[kind]
            obj = lookup("secret" if secret else "configmap", ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise MissingReference(f'{kind.lower()} "{ref.get("name")}" not found')
            data = dict(obj.get("data") or {})
            for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    raw = data[item["key"]]
                    files[item["path"]] = base64.b64decode(raw) if secret else str(raw).encode()
        for item in (source.get("downwardAPI") or {}).get("items") or []:
            if item.get("fieldRef"):
                files[item["path"]] = field_ref(pod, item["fieldRef"].get("fieldPath", "")).encode()
    return files


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, pathlib.Path]) -> list[Mount]:
    mounts = []
    for vm in container.get("volumeMounts") or []:
        local = volumes.get(vm.get("name", ""))
        if local is None:
            continue
        if vm.get("subPath"):
            local = local / vm["subPath"]
            local.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(str(vm["mountPath"]).rstrip("/") or "/", local, vm["name"]))
    mounts.sort(key=lambda m: len(m.mount_path), reverse=True)
    return mounts


def rewrite_paths(text: str, mounts: list[Mount]) -> str:
    """Replace mount paths used as path prefixes (`/cache`, `/cache/x`, `--dir=/cache`).

    One pass over the text: a replacement is never rewritten again by another mount
    (the kubelet's own directories may well lie under `/tmp`, itself a mount path).
    """
    if not mounts:
        return text
    by_path = {m.mount_path: str(m.local) for m in mounts}
    alternatives = "|".join(re.escape(p) for p in sorted(by_path, key=len, reverse=True))
    pattern = re.compile(r"(?<![\w./-])(" + alternatives + r")(?=/|$|[\s:;,\"'])")
    return pattern.sub(lambda m: by_path[m.group(1)], text)


# -- Service DNS -----------------------------------------------------------------------------


@dataclasses.dataclass
class ServiceTarget:
    namespace: str
    name: str
    ports: dict[int, int]  # service port → target port
    ip: str | None  # a Ready pod's IP, or None while none is Ready


def service_hostnames(svc: ServiceTarget, pod_namespace: str) -> list[str]:
    names = [
        f"{svc.name}.{svc.namespace}.svc.cluster.local",
        f"{svc.name}.{svc.namespace}.svc",
        f"{svc.name}.{svc.namespace}",
    ]
    if svc.namespace == pod_namespace:
        names.append(svc.name)
    return names


_URL_RE = re.compile(
    r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^@/]*@)?(?P<host>[^:/?#@]+)(?::(?P<port>\d+))?(?P<rest>[/?#].*)?$"
)
_HOSTPORT_RE = re.compile(r"^(?P<host>[^:/\s]+)(?::(?P<port>\d+))?$")


#: `name.namespace.svc` and `name.namespace.svc.cluster.local`: in a cluster such a name does
#: not resolve until its Service exists, and a process that retries gets there; here the
#: rewriting happens once, at start, so the container waits for the Service instead.
_SVC_NAME_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.svc(\.cluster\.local)?$"
)


class UnresolvedService(Exception):
    """A value names a Service that has no Ready pod yet."""


_HOST_ENV_RE = re.compile(r"(HOST|HOSTNAME|ADDR|ADDRESS|SERVER|SERVICE|ENDPOINT)$", re.IGNORECASE)


def env_may_be_bare_host(name: str) -> bool:
    """A bare single-label value (`redis`) is a hostname only in variables named like one."""
    return bool(_HOST_ENV_RE.search(name))


def rewrite_service(
    value: str, services: list[ServiceTarget], pod_namespace: str, *, bare: bool = True
) -> str:
    """Rewrite one env value or arg whose host is a Service name; raise if not Ready yet.

    `bare=False`: a lone single-label word (`backend`, no dot, port or scheme) is left
    alone, so that subcommands and ordinary words are never mistaken for hosts.
    """
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={rewrite_service(rest, services, pod_namespace)}"
    m = _URL_RE.match(value) or _HOSTPORT_RE.match(value)
    if not m:
        return value
    host = m.group("host")
    if not bare and "." not in host and m.group("port") is None and "scheme" not in m.groupdict():
        return value
    for svc in services:
        if host in service_hostnames(svc, pod_namespace):
            if svc.ip is None:
                raise UnresolvedService(f"service {svc.namespace}/{svc.name} has no Ready pod yet")
            port = m.group("port")
            new_port = str(svc.ports.get(int(port), int(port))) if port else None
            hostport = svc.ip + (f":{new_port}" if new_port else "")
            if "scheme" in m.groupdict():
                return f"{m.group('scheme')}{m.group('user') or ''}{hostport}{m.group('rest') or ''}"
            return hostport
    if _SVC_NAME_RE.match(host):  # unmistakably a Service's DNS name: it may not exist *yet*
        raise UnresolvedService(f"no service named by {host} yet")
    return value
