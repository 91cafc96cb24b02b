"""The transactions log has one writer per line kind, next to its parser: every line a writer
makes parses back to the fields it was given, and the manager spells no line out by hand."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubevine import txformat
from kubevine.resources import Resources
from kubevine.stats import ManagerStatus, Perf
from kubevine.txformat import KINDS, WRITERS, parse_line

R = Resources(cores=1.5, memory=2048, disk=100, gpus=1)
RES = {"cores": "1.5", "memory": "2048", "disk": "100", "gpus": "1"}
SPACEY = 'worker w1 silent for 31.0s, "quoted" a=b'  # needs JSON quoting
STATUS = ManagerStatus(
    workflow="wf",
    manager_id="m1",
    address="h:1",
    durable=True,
    time=1.0,
    started=0.0,
    tasks={"waiting": 1, "done": 2},
    totals={"submitted": 3},
    perf=Perf(dispatched=4, completed=2, cores_total=2, cores_in_use=1, transfer_bytes={"peer": 10}),
)

# writer -> (its arguments, the line's KIND, subject, event and fields as parsed back)
SAMPLES: dict[Callable[..., str], tuple[tuple[Any, ...], tuple[str, str, str, dict[str, str]]]] = {
    txformat.task_submitted: (
        (7, "command", R, "a category", None, "t=1"),
        (
            "TASK",
            "7",
            "waiting",
            {"type": "command", **RES, "category": "a category", "library": "-", "tag": "t=1"},
        ),
    ),
    txformat.task_moved: (
        (7, "retrying", 2, "w1", SPACEY, txformat.attempt_ran(1700000000.5, 0.25, 3)),
        (
            "TASK",
            "7",
            "retrying",
            {
                "attempt": "2",
                "worker": "w1",
                "cause": SPACEY,
                "started": "1700000000.500000",
                "wall": "0.250000",
                "exit": "3",
            },
        ),
    ),
    txformat.task_unschedulable: ((7, R), ("TASK", "7", "unschedulable", RES)),
    txformat.task_stale_result: (
        (7, 1, "w1"),
        ("TASK", "7", "stale-result", {"attempt": "1", "worker": "w1"}),
    ),
    txformat.task_regenerate: (
        (7, "temp-1", SPACEY),
        ("TASK", "7", "regenerate", {"file": "temp-1", "cause": SPACEY}),
    ),
    txformat.worker_connected: (
        ("w1", "node a", "h", R, 3, 0),
        ("WORKER", "w1", "connected", {"node": "node a", "host": "h", **RES, "cached": "3", "running": "0"}),
    ),
    txformat.worker_draining: (("w1",), ("WORKER", "w1", "draining", {})),
    txformat.worker_disconnected: (
        ("w1", SPACEY, 2),
        ("WORKER", "w1", "disconnected", {"cause": SPACEY, "tasks": "2"}),
    ),
    txformat.cache: (("w1", "forget", "buf-1"), ("CACHE", "w1", "forget", {"file": "buf-1"})),
    txformat.library_registered: (
        ("L", "fork", 2),
        ("LIBRARY", "L", "registered", {"mode": "fork", "slots": "2"}),
    ),
    txformat.library_removed: (("L",), ("LIBRARY", "L", "removed", {})),
    txformat.library_on: (("L", "installing", "w1"), ("LIBRARY", "L", "installing", {"worker": "w1"})),
    txformat.library_evicted: (
        ("L", "w1", "task"),
        ("LIBRARY", "L", "evicted", {"worker": "w1", "for": "task"}),
    ),
    txformat.transfer_sent: (
        ("file-1", "peer", "w2", "w1", 10, 0.5),
        (
            "TRANSFER",
            "file-1",
            "sent",
            {"source": "peer", "peer": "w2", "dest": "w1", "bytes": "10", "seconds": "0.500"},
        ),
    ),
    txformat.transfer_failed: (
        ("file-1", "url", None, "w1", SPACEY),
        ("TRANSFER", "file-1", "failed", {"source": "url", "peer": "-", "dest": "w1", "cause": SPACEY}),
    ),
    txformat.transfer_fetched: (
        ("temp-1", "peer", "w2", "c 1", 10, 0.5),
        (
            "TRANSFER",
            "temp-1",
            "fetched",
            {"source": "peer", "peer": "w2", "dest": "client:c 1", "bytes": "10", "seconds": "0.500"},
        ),
    ),
    txformat.manager_started: (
        ("m1", "wf", 9123, True, 4),
        ("MANAGER", "m1", "started", {"workflow": "wf", "port": "9123", "durable": "true", "epoch": "4"}),
    ),
    txformat.manager_restored: (
        ("m1", 1, 2, 3, 4, 5, 0.25),
        (
            "MANAGER",
            "m1",
            "restored",
            {
                "tasks": "1",
                "workers": "2",
                "libraries": "3",
                "files": "4",
                "replicas": "5",
                "seconds": "0.250",
            },
        ),
    ),
    txformat.manager_reseed: (("m1", 9), ("MANAGER", "m1", "reseed", {"tasks": "9"})),
    txformat.manager_refusing: (
        ("m1", "store-unavailable"),
        ("MANAGER", "m1", "refusing-work", {"cause": "store-unavailable"}),
    ),
    txformat.manager_accepting: (("m1",), ("MANAGER", "m1", "accepting-work", {})),
    txformat.manager_stopped: (("m1",), ("MANAGER", "m1", "stopped", {})),
    txformat.manager_perf: (
        (STATUS,),
        (
            "MANAGER",
            "m1",
            "perf",
            {
                "waiting": "1",
                "done": "2",
                "workers": "0",
                "cores_total": "2",
                "cores_in_use": "1",
                "submitted_total": "3",
                "dispatched_total": "4",
                "completed_total": "2",
                "dispatch_rate": "0.0",
                "complete_rate": "0.0",
                "cache_hits": "0",
                "cache_misses": "0",
                "bytes_peer": "10",
            },
        ),
    ),
}


def test_every_writer_has_a_sample() -> None:
    assert set(SAMPLES) == set(WRITERS)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_every_writer_s_line_parses_back_to_its_fields(writer: Callable[..., str]) -> None:
    args, (kind, subject, event, fields) = SAMPLES[writer]
    line = writer(*args)
    assert "\n" not in line
    e = parse_line(f"1700000000123456 m1 {line}")
    assert (e.kind, e.subject, e.event, e.fields) == (kind, subject, event, fields)
    assert e.time == pytest.approx(1700000000.123456) and e.manager == "m1"


def _line_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a string literal or an f-string starts with a log line's KIND and a space."""
    found = []
    nodes = list(ast.walk(tree))
    parts = {id(v) for n in nodes if isinstance(n, ast.JoinedStr) for v in n.values}  # seen as their f-string
    for node in nodes:
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if any(text.startswith(f"{kind} ") for kind in KINDS):
            found.append((node.lineno, text[:40]))
    return found


def test_the_manager_spells_no_log_line_out_by_hand() -> None:
    root = Path(__file__).resolve().parents[2]
    hits = {
        f"{path.relative_to(root)}:{line}": text
        for path in sorted((root / "manager").rglob("*.py"))
        for line, text in _line_literals(ast.parse(path.read_text()))
    }
    assert hits == {}, "build transactions-log lines with kubevine.txformat's writers"


def test_the_scan_finds_a_hand_made_line() -> None:
    src = 'x = f"TASK {t} done"\ny = "WORKER w1 draining"\nz = "TASKS are fine"\n'
    assert [line for line, _ in _line_literals(ast.parse(src))] == [1, 2]
