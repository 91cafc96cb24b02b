"""What the observability tests share: the workload, the run record, HTTP and polling helpers."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubevine import LocalCluster, Manager, Task

N_TASKS = 300
INPUT = b"0123456789" * 1000  # a 10 kB declared input every task reads


@dataclass
class RunResult:
    log: Path
    workdir: Path
    tasks: dict[int, Task] = field(default_factory=dict)
    workers: int = 2

    @property
    def successful(self) -> int:
        return sum(1 for t in self.tasks.values() if t.successful())

    @property
    def failed(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state == "failed")


def workload(m: Manager, n: int) -> dict[int, Task]:
    """``n`` tasks in three categories; every 50th fails (exit 3), retried once."""
    data = m.declare_buffer(INPUT)
    tasks: dict[int, Task] = {}
    for i in range(n):
        if i % 50 == 7:
            t = Task("wc -c < in.txt; exit 3", retries=1, category="doomed")
        else:
            t = Task(f"wc -c < in.txt; sleep 0.00{i % 4}", category=("reco", "skim", "fit")[i % 3])
        t.add_input(data, "in.txt")
        tasks[m.submit(t)] = t
    return tasks


def metrics_address(c: LocalCluster, timeout: float = 10.0) -> str:
    path = c.workdir / "manager" / "metrics-address"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the manager wrote no metrics-address"
        time.sleep(0.02)
    return path.read_text().strip()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def kubevine_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEVINE_")}
    env.update(extra)
    return env
