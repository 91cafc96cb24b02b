"""Where a task may run, beyond its resources: the features it asks for, and the inputs that
must not travel to it.

A task with ``features`` goes only to workers started with them (``kubevine worker --feature``).
An input bound ``strict`` (TaskVine's ``strict_input``, its "fixed location") must already be
on the worker's node: the task waits for such a worker to have room, and fails with
``fixed_location_missing`` when no connected worker holds it. A temp that may not come from a
peer (peer transfers off for the workflow, or ``peer_transfer=False`` on the file) can only be
read where it is, so the task goes there. When no connected worker has a task's features it is
set aside as unschedulable until one connects. Pure, like placement, which asks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubevine import txformat
from kubevine.ids import CacheName
from kubevine.manager.states import WorkerState
from kubevine.protocol import FileKind, Outcome, walk_bindings
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import TaskEntry, WorkerEntry

S = TaskState


def set_aside(core: Core, t: TaskEntry) -> None:
    """No worker can run ``t``: unschedulable until one that can connects."""
    t.unschedulable = True
    core.unschedulable.add(t.spec.id)
    core.transactions.append(txformat.task_unschedulable(t.spec.id, t.spec.resources))


def pinned(core: Core, t: TaskEntry) -> list[CacheName]:
    """Inputs of ``t`` that its worker's node must hold already: strict ones, and temps that
    may not come from a peer (peer transfers off for the workflow or for that file)."""
    peers_on = core.tunables.peer_transfers
    return [
        b.cache_name
        for b in walk_bindings(t.spec.inputs)
        if b.cache_name is not None
        and (b.strict or (b.kind == FileKind.TEMP and not (peers_on and b.peer_transfer)))
    ]


def where(core: Core, t: TaskEntry, workers: list[WorkerEntry]) -> list[WorkerEntry] | None:
    """The workers ``t`` may go to (None: any of them)."""
    features = t.spec.features
    names = pinned(core, t)
    if not features and not names:
        return None
    want = set(features)
    return [w for w in workers if want.issubset(w.info.features) and all(holds(core, w, n) for n in names)]


def holds(core: Core, w: WorkerEntry, name: CacheName | None) -> bool:
    """Whether ``w``'s node (its cache group) has ``name``."""
    return name is not None and (
        name in w.cached or core.catalog.on_node(name, w.info.cache_group or w.info.node)
    )


def could_run(core: Core, t: TaskEntry) -> bool:
    """No worker with room may take ``t`` now: may one later? If no connected worker has its
    features it is set aside; if none holds a strict input it fails (TaskVine's "fixed location
    missing"); else it waits for a worker that may take it to have room."""
    connected = [w for w in core.workers.values() if w.state in (WorkerState.CONNECTED, WorkerState.DRAINING)]
    if not any(set(t.spec.features).issubset(w.info.features) for w in connected):
        set_aside(core, t)
        return False
    missing = [
        b.remote_name
        for b in t.spec.inputs
        if b.strict and not any(holds(core, w, b.cache_name) for w in connected)
    ]
    if missing:
        error = f"strict input(s) {', '.join(missing)} are on no connected worker"
        core.life.finish(t, S.FAILED, Outcome.FIXED_LOCATION_MISSING, error=error)
        return False
    return True
