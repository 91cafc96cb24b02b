"""Every Redis key kubevine uses, built in one place.

All keys of a workflow share the prefix ``kubevine:{<workflow>}:``; the braces are a Redis
Cluster hash tag, so one workflow's keys live in one slot and a transaction may touch all
of them. Only the manager writes these keys; the operator reads ``stats``.
"""

from __future__ import annotations

ROOT = "kubevine"


def prefix(workflow: str) -> str:
    return f"{ROOT}:{{{workflow}}}:"


def lease(workflow: str) -> str:
    """String: the id of the manager driving the workflow, with a TTL."""
    return prefix(workflow) + "lease"


def epoch(workflow: str) -> str:
    """String: the fencing epoch, incremented by every manager that takes the lease."""
    return prefix(workflow) + "epoch"


def specs(workflow: str) -> str:
    """Hash: task id -> TaskSpec JSON (written once, at submission)."""
    return prefix(workflow) + "spec"


def payloads(workflow: str) -> str:
    """Hash: task id -> pickled function/arguments (binary)."""
    return prefix(workflow) + "payload"


def records(workflow: str) -> str:
    """Hash: task id -> TaskRecord JSON (state, attempt, worker)."""
    return prefix(workflow) + "rec"


def results(workflow: str) -> str:
    """Hash: task id -> a packed result (JSON header + binary frames), until the client acknowledges it."""
    return prefix(workflow) + "result"


def workers(workflow: str) -> str:
    """Hash: worker id -> WorkerInfo JSON of workers last seen connected."""
    return prefix(workflow) + "workers"


def meta(workflow: str) -> str:
    """Hash: counters and settings of the workflow (next task id, totals)."""
    return prefix(workflow) + "meta"


def libraries(workflow: str) -> str:
    """Hash: library name -> a packed LibrarySpec (JSON header + the pickled functions)."""
    return prefix(workflow) + "lib"


def files(workflow: str) -> str:
    """Hash: cache name -> contents of a file a client sent (so a new manager can serve it)."""
    return prefix(workflow) + "file"


def replicas(workflow: str) -> str:
    """Hash: "<worker id> <cache name>" -> cache group: which worker held which file."""
    return prefix(workflow) + "replica"


def stats(workflow: str) -> str:
    """String: the manager's latest published ManagerStatus JSON (read by the operator)."""
    return prefix(workflow) + "stats"


def all_keys(workflow: str) -> list[str]:
    return [
        lease(workflow),
        epoch(workflow),
        specs(workflow),
        payloads(workflow),
        records(workflow),
        results(workflow),
        workers(workflow),
        meta(workflow),
        libraries(workflow),
        files(workflow),
        replicas(workflow),
        stats(workflow),
    ]
