"""The workflow's settings a client may change while it runs: TaskVine's ``m.tune(name, value)``.

The client sends the names that mean something to the manager (``Tune``); each takes effect
from the next scheduling cycle, for the whole workflow (every client of it). Names and values
are TaskVine's:

==============================  ===========================================================
``wait-for-workers N``          nothing is dispatched until N workers are connected (once
                                reached, the wait is over, as in TaskVine)
``transient-error-interval S``  a transfer source that failed is avoided for S seconds, then
                                trusted again (default: avoided for good after 3 failures)
``worker-source-max-transfers`` transfers one worker serves to its peers at once (the manager
                                and URLs keep ``--transfers-per-source``)
``max-library-retries N``       after N failures of a library's instances (failed starts,
                                crashes) the library is removed: its calls fail "missing
                                library" (LIBRARY_ERROR); 0 or less: no limit (default 15)
``temp-replica-count N``        accepted; temps are not copied ahead of need here (said once)
``immediate-recovery 0|1``      a temp lost with a worker is made again at once, not only
                                when a task still needs it
``peer-transfers 0|1``          0: staging never offers a peer as a source (TaskVine's
                                ``disable_peer_transfers``); a temp then runs where it is
==============================  ===========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tunables:
    """The current values (TaskVine's defaults)."""

    wait_for_workers: int = 0
    transient_error_interval: float | None = None
    worker_source_max_transfers: int | None = None
    max_library_retries: int = 15
    temp_replica_count: int = 1
    immediate_recovery: bool = False
    peer_transfers: bool = True


def _count(lo: int) -> Callable[[float], int]:
    def parse(v: float) -> int:
        if v != int(v) or v < lo:
            raise ValueError(f"a whole number of at least {lo}")
        return int(v)

    return parse


def _seconds(v: float) -> float:
    if v < 0:
        raise ValueError("seconds, at least 0")
    return v


def _flag(v: float) -> bool:
    if v not in (0, 1):
        raise ValueError("0 or 1")
    return bool(v)


def _int(v: float) -> int:
    if v != int(v):
        raise ValueError("a whole number")
    return int(v)


#: TaskVine name -> (field, how its value is read)
NAMES: dict[str, tuple[str, Callable[[float], object]]] = {
    "wait-for-workers": ("wait_for_workers", _count(0)),
    "transient-error-interval": ("transient_error_interval", _seconds),
    "worker-source-max-transfers": ("worker_source_max_transfers", _count(1)),
    "max-library-retries": ("max_library_retries", _int),
    "temp-replica-count": ("temp_replica_count", _count(1)),
    "immediate-recovery": ("immediate_recovery", _flag),
    "peer-transfers": ("peer_transfers", _flag),
}


def apply(tunables: Tunables, name: str, value: float) -> str | None:
    """Set ``name`` to ``value``; why not (for the client), or None."""
    known = NAMES.get(name)
    if known is None:
        return f"tune({name!r}): not a setting the manager has (it has: {', '.join(sorted(NAMES))})"
    field, parse = known
    try:
        setattr(tunables, field, parse(value))
    except ValueError as e:
        return f"tune({name!r}, {value}): the value must be {e}"
    if name == "temp-replica-count" and value > 1:
        log.warning("tune('temp-replica-count', %s): temps are not copied ahead of need here", value)
    return None
