"""A Kubernetes API server emulator for tests, built on kmock.

No cluster can run where kubevine is tested, yet its operator must run for real
(`kopf run`) and be driven with the real `kubectl`. This package serves enough of the
Kubernetes API for that: see docs/dev/kube-harness.md.
"""

from .resources import Registry, ResourceType
from .runner import EmulatorThread, KubeAPI, client_env, serve, write_kubeconfig
from .server import EmulatorHandler
from .store import DeleteOptions, Store

__all__ = [
    "DeleteOptions",
    "EmulatorHandler",
    "EmulatorThread",
    "KubeAPI",
    "Registry",
    "ResourceType",
    "Store",
    "client_env",
    "serve",
    "write_kubeconfig",
]
