"""Garbage-collector settings for kubevine's long-running processes (manager, worker, library).

CPython's cyclic collector runs after every 700 net allocations and, every so often, walks
every live object. A manager holding tens of thousands of tasks, or a library process that
imported numpy and awkward, then spends more time in the collector than in its own work:
measured on the calls benchmark, the collector took about half of the manager's and the
client's CPU. Our own state is free of reference cycles (tasks, messages and results are
freed by reference counting), so collecting rarely loses nothing. Only process entry points
call this — never a user's process. A library process runs user functions, whose garbage may
well be cyclic: it only moves what its imports and context made out of the collector's sight
(``for_library``) and keeps CPython's thresholds.
"""

from __future__ import annotations

import gc

YOUNG = 50_000  # allocations between collections of the youngest generation (CPython: 700)
OLDER = 50  # collections of a generation between collections of the next (CPython: 10)


def for_service() -> None:
    """Collect rarely, and never walk what exists now (modules, schemas: everything imported
    at start-up is moved out of the collector's sight for good)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDER)


def for_library() -> None:
    """A library after its imports and context set-up: what exists now (numpy, awkward,
    coffea, the context) is never walked again; the user's calls are collected as usual."""
    gc.collect()
    gc.freeze()
