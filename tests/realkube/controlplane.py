"""A real Kubernetes control plane and process-kubelet nodes on this machine.

`Cluster(settings).start()` builds (once; hack/cluster/build.sh) or reuses etcd,
kube-apiserver, kube-controller-manager and kube-scheduler, makes a CA and certificates
(pki.py), a bridge and one network namespace per node (network.py), starts

    etcd                     127.0.0.1:<free port>, unreachable from node namespaces
    kube-apiserver           https://<bridge IP>:6443, client certificates, RBAC + Node
                             authorization, default admission plugins + NodeRestriction
                             (Pod Security Admission is among the defaults), service-account
                             tokens signed with sa.key
    kube-controller-manager  every default controller, each with its own service account;
                             short node-monitor grace period (nodes go NotReady in seconds)
    kube-scheduler
    one process kubelet per node (tests/kube/realkubelet.py), inside its namespace

and writes an admin kubeconfig to `<state>/kubeconfig`. `Cluster.load(state).stop()`
stops it all, deletes the namespaces and the bridge and removes the kubelets' cgroups.
Everything it started is recorded in `<state>/cluster.json` as it goes, so `down` also
cleans up after a crashed `up`.

From the repository root (as root): `python -m tests.realkube.controlplane up --state .cluster`,
`... down --state .cluster`, `... status --state .cluster` (`make cluster`, `make cluster-down`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from . import network, pki

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "cluster" / "build.sh"
SERVICE_CIDR = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAMES = "abcdefghijklmnopqrstuvwxyz"


def node_name(index: int) -> str:
    return f"node-{NODE_NAMES[index]}"


def ensure_binaries(quiet: bool = False) -> pathlib.Path:
    """The directory of the built binaries, building them first if needed (many minutes, once)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({result.returncode}); its output is above")
    return pathlib.Path(result.stdout.strip().splitlines()[-1])


def _rfc3339(text: str) -> float:
    """Unix time of an RFC 3339 timestamp with microseconds (`2026-01-02T03:04:05.123456Z`)."""
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _memory_cgroup_of(pid: int) -> str | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):
                return str(pathlib.Path("/sys/fs/cgroup/memory") / rel.lstrip("/"))
    except OSError:
        return None
    return None


def _remove_cgroup_tree(path: pathlib.Path) -> None:
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


@dataclasses.dataclass
class Settings:
    state: pathlib.Path
    name: str = "kv"  # prefix of the bridge, namespaces and veths
    nodes: int = 3
    node_net: str = "10.77.0.0/16"
    pod_net: str = "10.78.0.0/16"
    apiserver_port: int = 6443
    bandwidth: str | None = None  # each node's link, e.g. "1gbit"
    node_monitor_grace: int = 8  # seconds without a heartbeat before a node is NotReady/Unknown
    toleration_seconds: int = 5  # default not-ready/unreachable toleration: eviction after this
    lease_duration: int = 4  # node lease, renewed every quarter of it
    node_status_period: float = 5.0
    start_timeout: float = 120.0
    node_cpu: str = "8"  # each node's capacity (scheduling only; memory limits are cgroups)
    node_memory: str = "32Gi"
    audit: bool = True  # the API server's audit log (<state>/logs/audit.log): who called what

    @property
    def network(self) -> network.NetworkConfig:
        return network.NetworkConfig(self.name, self.node_net, self.pod_net)


class AdminClient:
    """Just enough of a synchronous API client (urllib) for bringing the cluster up and checking it."""

    def __init__(self, server: str, ca: pathlib.Path, identity: pki.Identity) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(identity.cert), str(identity.key))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as rsp:
            text = rsp.read()
        return json.loads(text) if text.strip().startswith(b"{") else text.decode()

    def get(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def apply(self, collection: str, body: dict[str, Any]) -> None:
        """Create, or leave as it is if it exists."""
        try:
            self.request("POST", collection, body)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise

    def ready_nodes(self) -> set[str]:
        nodes = self.get("/api/v1/nodes") or {"items": []}
        return {
            n["metadata"]["name"]
            for n in nodes["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status") or {}).get("conditions") or []
            )
        }


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state.resolve()
        self.net = settings.network
        self.pki = pki.PKI(self.state_dir / "pki")
        self.logs = self.state_dir / "logs"
        self.bin: pathlib.Path | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # only for processes we started ourselves
        self.record: dict[str, Any] = {"settings": {}, "pids": {}, "cgroups": {}, "nodes": {}}

    # -- state ----------------------------------------------------------------------------

    @property
    def state_file(self) -> pathlib.Path:
        return self.state_dir / "cluster.json"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.net.gateway}:{self.settings.apiserver_port}"

    def _save(self) -> None:
        s = dataclasses.asdict(self.settings)
        s["state"] = str(self.settings.state)
        self.record["settings"] = s
        self.record["server"] = self.server
        self.record["kubeconfig"] = str(self.kubeconfig)
        self.state_file.write_text(json.dumps(self.record, indent=2))

    @classmethod
    def load(cls, state: pathlib.Path) -> Cluster:
        """The cluster recorded in `state` (or an empty record: `stop` still cleans by name)."""
        file = state / "cluster.json"
        record = json.loads(file.read_text()) if file.exists() else {}
        raw = dict(record.get("settings") or {})
        raw["state"] = pathlib.Path(raw.get("state") or state)
        fields = {f.name for f in dataclasses.fields(Settings)}
        cluster = cls(Settings(**{k: v for k, v in raw.items() if k in fields}))
        cluster.record = {"settings": {}, "pids": {}, "cgroups": {}, "nodes": {}, **record}
        return cluster

    def admin(self) -> AdminClient:
        return AdminClient(
            self.server, self.pki.ca_cert, self.pki.client("admin", "kubernetes-admin", ("system:masters",))
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/kopf subprocesses: this cluster's admin kubeconfig only."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.state_dir / "kubectl-cache")
        for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            env.pop(var, None)
        return env

    # -- processes ------------------------------------------------------------------------

    def _spawn(
        self, key: str, argv: list[str], *, cwd: pathlib.Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
                env=env,
            )
        self.procs[key] = proc
        self.record["pids"][key] = {"pid": proc.pid, "exe": argv[0]}
        self._save()

    def _check_running(self, key: str) -> None:
        proc = self.procs.get(key)
        if proc is not None and proc.poll() is not None:
            tail = (self.logs / f"{key}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{key} exited with {proc.returncode}; the end of its log:\n{tail}")

    def _stop_process(self, key: str, timeout: float = 15.0) -> None:
        info = self.record["pids"].get(key)
        if not info:
            return
        pid, exe = int(info["pid"]), str(info["exe"])
        proc = self.procs.pop(key, None)
        ours = proc is not None or (_cmdline(pid)[:1] == [exe])  # never signal a recycled pid
        if ours and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    break
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        del self.record["pids"][key]
        self._save()

    def _wait(self, what: str, predicate: Any, keys: list[str], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.settings.start_timeout)
        last: object = None
        while True:
            for key in keys:
                self._check_running(key)
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError) as e:
                last = e
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} (last error: {last})")
            time.sleep(0.2)

    # -- start ----------------------------------------------------------------------------

    def start(self) -> Cluster:
        if self.state_file.exists():
            Cluster.load(self.state_dir).stop()
        network.teardown(self.net)
        self._clear_state()
        self._save()
        try:
            self.bin = ensure_binaries()
            self._make_pki()
            network.ensure_bridge(self.net)
            self._start_etcd()
            self._start_apiserver()
            self._bootstrap()
            self._start_controller_manager()
            self._start_scheduler()
            for i in range(self.settings.nodes):
                self.start_node(i, wait=False)
            names = [node_name(i) for i in range(self.settings.nodes)]
            admin = self.admin()
            self._wait(
                f"nodes {names} Ready",
                lambda: set(names) <= admin.ready_nodes(),
                [f"kubelet-{n}" for n in names],
            )
        except BaseException:
            self.stop()
            raise
        return self

    #: What `start` writes under the state folder (and removes first): nothing else there is
    #: touched, so another cluster's state may live in a subfolder (tests use `.cluster/pytest-<slot>`).
    STATE_ENTRIES = ("cluster.json", "kubeconfig", "pki", "etcd", "logs", "kubelet", "nodes", "kubectl-cache",
                     "kube-controller-manager.kubeconfig", "kube-scheduler.kubeconfig",
                     "audit-policy.json")  # fmt: skip

    def _clear_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.STATE_ENTRIES:
            target = self.state_dir / entry
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def _make_pki(self) -> None:
        self.pki.ensure_ca()
        self.pki.serving(
            "kube-apiserver",
            ips=[self.net.gateway, "127.0.0.1", "10.96.0.1"],
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        ca = self.pki.ca_cert
        admin = self.pki.client("admin", "kubernetes-admin", ("system:masters",))
        pki.write_kubeconfig(self.kubeconfig, self.server, ca, admin, user="kubernetes-admin")
        for name, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ):
            identity = self.pki.client(name, user)
            pki.write_kubeconfig(
                self.state_dir / f"{name}.kubeconfig", self.server, ca, identity, user=user, embed=False
            )
        self.pki.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
        self.pki.client("front-proxy-client", "front-proxy-client")

    def _start_etcd(self) -> None:
        assert self.bin is not None
        client, peer = free_port(), free_port()
        self.record["etcd"] = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=2) as rsp:
                return b'"health":"true"' in rsp.read()

        self._wait("etcd", healthy, ["etcd"])

    def _start_apiserver(self) -> None:
        assert self.bin is not None
        p, s = self.pki, self.settings
        serving = p.serving("kube-apiserver", [], [])
        kubelet_client = p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
        front_proxy = p.client("front-proxy-client", "front-proxy-client")
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers={self.record['etcd']}",
                f"--bind-address={self.net.gateway}",
                f"--advertise-address={self.net.gateway}",
                f"--secure-port={s.apiserver_port}",
                f"--cert-dir={p.dir / 'apiserver'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={p.ca_cert}",
                "--authorization-mode=Node,RBAC",
                # NodeRestriction holds kubelets to their own node; OwnerReferencesPermissionEnforcement
                # checks that whoever sets blockOwnerDeletion may update the owner's finalizers.
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--default-not-ready-toleration-seconds={s.toleration_seconds}",
                f"--default-unreachable-toleration-seconds={s.toleration_seconds}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={p.ca_cert}",
                # Request-header authentication (aggregated APIs; components read it at start).
                f"--requestheader-client-ca-file={p.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert}",
                f"--proxy-client-key-file={front_proxy.key}",
                "--profiling=false",
                "--event-ttl=1h",
                *self._audit_flags(),
            ],
        )
        admin = self.admin()
        self._wait(
            "kube-apiserver /readyz",
            lambda: admin.request("GET", "/readyz", timeout=3) == "ok",
            ["kube-apiserver"],
        )

    @property
    def audit_log(self) -> pathlib.Path:
        return self.logs / "audit.log"

    #: Who is audited: everyone but the control plane's own components and the nodes, whose
    #: steady chatter (leases, node status, controllers' resyncs) says nothing about kubevine.
    AUDIT_POLICY = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "userGroups": ["system:nodes", "system:serviceaccounts:kube-system"]},
            {
                "level": "None",
                "users": ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"],
            },
            {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
            {"level": "Metadata"},
        ],
    }

    def _audit_flags(self) -> list[str]:
        if not self.settings.audit:
            return []
        policy = self.state_dir / "audit-policy.json"
        policy.write_text(json.dumps(self.AUDIT_POLICY))
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=0",
        ]

    def audit_events(self, since: float = 0.0, until: float | None = None) -> list[dict[str, Any]]:
        """The audit log's requests received between the unix times `since` and `until`, one
        event each (a watch is there from its ResponseStarted stage, while it is still open):
        who (`user.username`), `verb`, `objectRef`, response code, `requestReceivedTimestamp`."""
        if not self.audit_log.exists():
            return []
        found: dict[str, dict[str, Any]] = {}
        with self.audit_log.open() as f:
            for line in f:
                event = json.loads(line)
                if event.get("stage") not in ("ResponseStarted", "ResponseComplete", "Panic"):
                    continue
                received = _rfc3339(str(event.get("requestReceivedTimestamp") or "1970-01-01T00:00:00Z"))
                if received < since or (until is not None and received >= until):
                    continue
                found.setdefault(str(event.get("auditID")), event)
        return list(found.values())

    def _bootstrap(self) -> None:
        """Objects the process kubelet needs beyond a kubelet's own rights, and a default
        StorageClass.

        It also does kube-proxy's reading (Service DNS from EndpointSlices), so the nodes'
        group gets kube-proxy's role, system:node-proxier. The StorageClass `standard` (the
        default) provisions through the controller-manager's hostPath provisioner, as kind's
        `standard` class provisions local volumes.
        """
        self.admin().apply(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "standard",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/host-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
        )
        self.admin().apply(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "kubevine:process-kubelet:node-proxier"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node-proxier",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
                ],
            },
        )

    def _start_controller_manager(self) -> None:
        assert self.bin is not None
        p, s = self.pki, self.settings
        kubeconfig = self.state_dir / "kube-controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={p.dir / 'kube-controller-manager'}",
                f"--service-account-private-key-file={p.sa_key}",
                f"--root-ca-file={p.ca_cert}",
                f"--cluster-signing-cert-file={p.ca_cert}",
                f"--cluster-signing-key-file={p.ca_key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                # PVCs (a managed Redis's) get hostPath PVs from the in-tree test provisioner; the
                # process kubelet keeps a claim's data in <state>/kubelet/claims/<ns>/<claim>.
                "--enable-hostpath-provisioner=true",
                "--node-monitor-period=1s",
                f"--node-monitor-grace-period={s.node_monitor_grace}s",
                "--profiling=false",
            ],
        )

    def _start_scheduler(self) -> None:
        assert self.bin is not None
        kubeconfig = self.state_dir / "kube-scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.pki.dir / 'kube-scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    # -- nodes ----------------------------------------------------------------------------

    def start_node(self, index: int, *, wait: bool = True, bandwidth: str | None = None) -> str:
        """Create node `index`'s namespace and start its kubelet there (again, after `kill_node`)."""
        name = node_name(index)
        ns = self.net.namespace(name)
        network.add_node(self.net, index, name, bandwidth or self.settings.bandwidth)
        identity = self.pki.client(f"node-{name}", f"system:node:{name}", ("system:nodes",))
        serving = self.pki.serving(f"kubelet-{name}", ips=[self.net.node_ip(index)], dns=[name])
        kubeconfig = pki.write_kubeconfig(
            self.state_dir / "nodes" / f"{name}.kubeconfig", self.server, self.pki.ca_cert, identity,
            user=f"system:node:{name}", embed=False,
        )  # fmt: skip
        key = f"kubelet-{name}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
        env["PYTHONPATH"] = str(REPO)
        self._spawn(
            key,
            [
                "nsenter", f"--net=/run/netns/{ns}", "--",
                sys.executable, "-m", "tests.kube.realkubelet",
                f"--kubeconfig={kubeconfig}",
                f"--root={self.state_dir / 'kubelet'}",
                f"--node={name}",
                f"--node-ip={self.net.node_ip(index)}",
                f"--pod-cidr={self.net.pod_cidr(index)}",
                f"--apiserver={self.net.gateway}:{self.settings.apiserver_port}",
                f"--lease-duration={self.settings.lease_duration}",
                f"--status-period={self.settings.node_status_period}",
                f"--cgroup-name=kubevine-{ns}",
                f"--netns-prefix={ns}",
                f"--capacity=cpu={self.settings.node_cpu}",
                f"--capacity=memory={self.settings.node_memory}",
                f"--tls-cert={serving.cert}",
                f"--tls-key={serving.key}",
                f"--client-ca={self.pki.ca_cert}",
            ],
            cwd=REPO,
            env=env,
        )  # fmt: skip
        self.record["pids"][key]["exe"] = sys.executable  # nsenter execs python: the pid is the kubelet's
        cgroup = _memory_cgroup_of(self.procs[key].pid)
        if cgroup:
            self.record["cgroups"][name] = str(pathlib.Path(cgroup) / f"kubevine-{ns}")
        self.record["nodes"][name] = {"index": index, "namespace": ns, "ip": self.net.node_ip(index)}
        self._save()
        if wait:
            admin = self.admin()
            self._wait(f"node {name} Ready", lambda: name in admin.ready_nodes(), [key])
        return name

    def shape_node(self, name: str, rate: str | None) -> None:
        """Limit the node's link to `rate` each way (e.g. "1gbit"), or lift the limit (None)."""
        index = int(self.record["nodes"][name]["index"])
        if rate:
            network.shape(self.net, index, name, rate)
        else:
            network.unshape(self.net, index, name)

    def link_stats(self, name: str) -> dict[str, Any]:
        """Statistics of the qdisc on the node's side of its link (`network.qdisc_stats`)."""
        return network.qdisc_stats(self.net, name)

    def stop_node(self, name: str) -> None:
        """Stop the node's kubelet gracefully (it stops its pods), then remove its namespace."""
        self._stop_process(f"kubelet-{name}")
        self.kill_node(name)

    def kill_node(self, name: str) -> None:
        """The node dies at once: every process in its namespace is SIGKILLed, the namespace deleted."""
        key = f"kubelet-{name}"
        proc = self.procs.pop(key, None)
        network.remove_node(self.net, name)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.record["pids"].pop(key, None)
        cgroup = self.record["cgroups"].pop(name, None)
        if cgroup:
            _remove_cgroup_tree(pathlib.Path(cgroup))
        self.record["nodes"].pop(name, None)
        self._save()

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this cluster started; leave no process, namespace, bridge or cgroup."""
        for key in [k for k in self.record["pids"] if k.startswith("kubelet-")]:
            self._stop_process(key)
        for name in list(self.record["nodes"]):
            self.kill_node(name)
        for key in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop_process(key)
        for key in list(self.record["pids"]):
            self._stop_process(key)
        network.teardown(self.net)
        for cgroup in list(self.record["cgroups"].values()):
            _remove_cgroup_tree(pathlib.Path(cgroup))
        self.record["cgroups"] = {}
        if self.state_dir.exists():
            self._save()

    def leftovers(self) -> list[str]:
        """What of this cluster is still there (empty after `stop`)."""
        found = [f"process {k} ({v['pid']})" for k, v in self.record["pids"].items() if _alive(int(v["pid"]))]
        found += network.leftovers(self.net)
        found += [f"cgroup {c}" for c in self.record["cgroups"].values() if pathlib.Path(c).exists()]
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.realkube.controlplane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--state", type=pathlib.Path, default=REPO / ".cluster")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--bandwidth", default=os.environ.get("KUBEVINE_NODE_BANDWIDTH") or None,
                        help="each node's link rate each way, e.g. 1gbit (tc tbf)")  # fmt: skip
    parser.add_argument("--name", default="kv", help="prefix of the bridge and namespaces")
    parser.add_argument("--node-net", default="10.77.0.0/16")
    parser.add_argument("--pod-net", default="10.78.0.0/16")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(ensure_binaries())
        return 0
    if args.command == "down":
        cluster = Cluster.load(args.state)
        cluster.stop()
        left = cluster.leftovers()
        if left:
            print(f"still there: {left}", file=sys.stderr)
            return 1
        print("cluster stopped: no process, network namespace, bridge or cgroup left")
        return 0
    if args.command == "status":
        cluster = Cluster.load(args.state)
        alive = {k: _alive(int(v["pid"])) for k, v in cluster.record["pids"].items()}
        print(json.dumps({"server": cluster.record.get("server"), "processes": alive}, indent=2))
        return 0 if alive and all(alive.values()) else 1
    if os.geteuid() != 0:
        print("the cluster needs root (network namespaces, bridge, cgroups)", file=sys.stderr)
        return 1
    settings = Settings(
        state=args.state, name=args.name, nodes=args.nodes, node_net=args.node_net, pod_net=args.pod_net,
        bandwidth=args.bandwidth,
    )  # fmt: skip
    started = time.monotonic()
    cluster = Cluster(settings).start()
    print(f"cluster up in {time.monotonic() - started:.1f} s: {cluster.server}, {settings.nodes} nodes Ready")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
