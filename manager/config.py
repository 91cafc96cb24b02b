"""Settings of one manager process, and the files it writes for others to find it by.

The CLI (``kubevine manager``, its flags and ``KUBEVINE_*`` variables) and ``LocalCluster``
fill a :class:`ManagerConfig`; the service reads it. The manager writes the address it serves
on (and its metrics address) to its workdir, for local clusters and tests to find.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ManagerConfig:
    """Settings of one manager process (the CLI and LocalCluster fill it)."""

    name: str = "default"  # the workflow name: the Redis prefix, and what clients reattach to
    host: str = "0.0.0.0"  # address to bind (KUBEVINE_BIND_HOST)
    port: int = 9123  # 0 picks a free port (written to <workdir>/address)
    token: str = ""
    encrypt: bool = False  # every connection encrypted with ZeroMQ CURVE (KUBEVINE_ENCRYPT)
    workdir: Path = Path(".")
    redis_url: str | None = None
    redis_password: str | None = None
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    recover_grace: float = 30.0
    lease_ttl: float = 15.0  # a dead manager's workflow can be taken over this long after
    lease_wait: float | None = None  # how long to wait for a held lease (default: its TTL + 5 s)
    redis_outage_grace: float = 60.0  # seconds of Redis outage after which new work is refused
    # A store holding more tasks than this is restored in slices while the manager serves
    # (about 20 s of loading per million tasks); up to it, all are loaded before it serves.
    restore_at_once: int = 50_000
    stats_interval: float = 2.0
    prefetch: int = 3
    transfers_per_source: int = 4  # concurrent transfers one source serves (a popular file fans out)
    metrics_port: int | None = None  # serve /metrics and /healthz over HTTP (0: any free port)
    transactions_stdout: bool = False  # also echo the transactions log to stdout
    transactions_json: bool = False  # ... as JSON objects, one a line


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a concurrent reader sees the old file or the whole new one, never ""."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
