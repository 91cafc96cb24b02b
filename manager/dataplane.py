"""The scheduler's data-plane decisions: when a task's inputs exist, where they come from,
and what to re-run when the only copy of an intermediate file is lost.

Called by :class:`kubevine.manager.core.Core` at its hook points (submission, dispatch,
worker reports, worker loss); pure, like the core: it reads and changes core state, moves
tasks through the core's :class:`~kubevine.manager.states.Lifecycle` and appends
instructions, nothing else.

- A task whose input is a temp file (another task's output) waits until a copy exists.
- Each input is staged from the cheapest source the :class:`~kubevine.manager.catalog.Catalog`
  knows; a file already travelling to the task's node is awaited, not sent again.
- When a worker is lost with the only copy of a temp file that a task still needs, the task
  that produced it runs again (and, recursively, whatever produced *its* lost inputs) before
  the consumers run; the consumers wait meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kubevine import txformat
from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.manager.catalog import Catalog, FileInfo
from kubevine.protocol import (
    AttemptResult,
    FileBinding,
    FileKind,
    Outcome,
    OutputFile,
    StageIn,
    TaskKind,
    TaskSpec,
    TransferRecord,
    walk_bindings,
)
from kubevine.states import TaskState

if TYPE_CHECKING:
    from kubevine.manager.core import Core
    from kubevine.manager.entries import TaskEntry, WorkerEntry

S = TaskState


def on_submit(core: Core, catalog: Catalog, t: TaskEntry) -> str | None:
    """Register the task's files; None if it may become ready now, else why it waits or fails.

    Returns "wait" when an input is a temp file with no copy yet, or an error message when an
    input can never exist.
    """
    spec: TaskSpec = t.spec
    if core.undeclared or core.undeclare_later:  # declared again by this task
        names = [b.cache_name for b in (*walk_bindings(spec.inputs), *spec.outputs) if b.cache_name]
        core.undeclared.difference_update(names)
        for n in names:
            core.undeclare_later.pop(n, None)
    for b in spec.outputs:
        if b.kind == FileKind.TEMP and b.cache_name is not None:
            catalog.info.setdefault(b.cache_name, FileInfo()).producer = spec.id
            core.producers.setdefault(b.cache_name, spec.id)
    wait = False
    for b in walk_bindings(spec.inputs):  # inputs, and what they are made from
        name = b.cache_name
        if name is None:
            continue
        if b.kind == FileKind.URL:
            catalog.info.setdefault(name, FileInfo()).url = b.url
        elif b.kind == FileKind.TEMP and not catalog.available(name):
            producer = core.producers.get(name)
            if producer is None:
                return (
                    f"temp file for input {b.remote_name!r} ({name}) has no task that produces it "
                    "(its producer was never submitted, or the file was undeclared)"
                )
            p = core.tasks.get(producer)
            if p is not None and p.state in (S.FAILED, S.CANCELLED):
                return f"input {b.remote_name!r} cannot be produced: its producer task {producer} {p.state}"
            wait_for(core, name, t)
            if p is not None and p.state == S.DONE:
                regenerate(core, catalog, name, f"task {spec.id} needs it")
            wait = True
    return "wait" if wait else None


def stage_for(
    core: Core, catalog: Catalog, t: TaskEntry, w: WorkerEntry, peers: dict[WorkerId, tuple[str | None, str]]
) -> list[StageIn] | None:
    """How ``w`` gets each input of ``t``; None when an input must be awaited first."""
    return stage_inputs(core, catalog, t.spec.inputs, w, peers)


def stage_inputs(
    core: Core,
    catalog: Catalog,
    inputs: Sequence[FileBinding],
    w: WorkerEntry,
    peers: dict[WorkerId, tuple[str | None, str]],
) -> list[StageIn] | None:
    """How ``w`` gets each of ``inputs`` (a task's, or a library's); None when one must be
    awaited first.

    An unpacked archive or a minitask's product is made by the worker itself (once per node
    cache): what is staged is what it is made from, unless the node has it already. A file
    whose binding says ``peer_transfer=False``, or every file while the workflow has peer
    transfers off, comes from the manager or its URL only.
    """
    stages: list[StageIn] = []
    staged: set[CacheName] = set()  # names in ``stages``: each input is looked at once (O(inputs))
    planned: list[CacheName] = []
    serving: set[str] = set()  # sources this task already takes a file from
    group = w.info.cache_group or w.info.node

    def need(b: FileBinding) -> bool:
        name = b.cache_name
        if name is None or name in w.cached or name in staged:
            return True
        if b.kind in (FileKind.UNTAR, FileKind.MINITASK):
            if catalog.on_node(name, group):
                return True
            parts = [b.source] if b.source is not None else list(b.mini.inputs if b.mini else [])
            return all(need(p) for p in parts)
        from_peers = b.peer_transfer and core.tunables.peer_transfers
        manager_has = name in core.known_files
        stage = catalog.plan(name, w.id, group, peers, manager_has, b.cache, serving, from_peers)
        if stage is None:
            return False
        if stage.sources:
            planned.append(name)
        stages.append(stage)
        staged.add(name)
        return True

    for b in inputs:
        if not need(b):
            for n in planned:  # undo the transfers planned for this task's other inputs
                catalog.done(w.id, n, group)
            return None
    return stages


def on_cached(core: Core, catalog: Catalog, w: WorkerEntry, names: list[CacheName]) -> None:
    group = w.info.cache_group or w.info.node
    late: list[CacheName] = []
    for name in names:
        catalog.done(w.id, name, group)  # its transfer, if any, no longer holds its source
        if name in core.undeclared:  # made or fetched while it was being undeclared
            late.append(name)
            continue
        w.cached.add(name)
        catalog.add(name, w.id, group)
        arrived(core, name)
    if late:  # delete this copy too
        core.forget_on(w.id, late)


def on_evicted(catalog: Catalog, w: WorkerEntry, names: list[CacheName]) -> None:
    for name in names:
        w.cached.discard(name)
        catalog.remove(name, w.id, w.info.cache_group or w.info.node)


def on_transfers(core: Core, catalog: Catalog, w: WorkerEntry, records: list[TransferRecord]) -> None:
    for r in records:
        if r.source == "node":  # found on its node: the transfer planned for it never ran
            catalog.release(w.id, r.cache_name)
            continue
        src = r.source_worker or r.source
        if r.ok:
            core.transactions.append(
                txformat.transfer_sent(r.cache_name, r.source, r.source_worker, w.id, r.bytes, r.seconds)
            )
            core.moved[r.source] = core.moved.get(r.source, 0) + r.bytes
        else:
            catalog.failed_source(src, core.now)
            info = catalog.info.get(r.cache_name)
            key = r.source_worker or (f"url:{info.url}" if r.source == "url" and info else r.source)
            catalog.release(w.id, r.cache_name, key)  # that source serves this transfer no more
            core.transactions.append(
                txformat.transfer_failed(r.cache_name, r.source, r.source_worker, w.id, r.error)
            )


def on_outputs(core: Core, catalog: Catalog, w: WorkerEntry, outputs: list[OutputFile]) -> None:
    """A task's temp outputs are now cached on ``w``."""
    for o in outputs:
        if o.cache_name is None:
            continue
        info = catalog.info.setdefault(o.cache_name, FileInfo())
        info.size, info.checksum = o.size, o.checksum
        on_cached(core, catalog, w, [o.cache_name])


def wait_for(core: Core, name: CacheName, t: TaskEntry) -> None:
    """``t`` waits for ``name`` to exist (each task counts the names it waits for, so an
    arrival costs O(1) and only the last one looks at all of its inputs)."""
    waiting = core.waiting_for.setdefault(name, set())
    if t.spec.id not in waiting:
        waiting.add(t.spec.id)
        t.waits += 1


def on_spilled(core: Core, catalog: Catalog, w: WorkerEntry, r: AttemptResult) -> None:
    """An attempt's stdout, value or outputs too large to travel inline were kept on ``w``:
    the client fetches them from there, so they are replicas like any other (forgotten, and
    deleted from the worker, when the client undeclares them)."""
    spilled = [o for o in r.outputs if o.spilled and o.cache_name is not None]
    for o in spilled:
        info = catalog.info.setdefault(CacheName(o.cache_name or ""), FileInfo())
        info.size, info.checksum = o.size, o.checksum
    names = [CacheName(o.cache_name or "") for o in spilled]
    if r.output_spill is not None:
        names.append(r.output_spill)
    if names:
        on_cached(core, catalog, w, names)


def arrived(core: Core, name: CacheName) -> None:
    """A copy of ``name`` exists: tasks that waited only for it become ready."""
    waiting = core.waiting_for.pop(name, set())
    for tid in waiting:
        t = core.tasks.get(tid)
        if t is None or t.state != S.WAITING:
            continue
        t.waits = max(0, t.waits - 1)
        if t.waits:
            continue  # it waits for others still
        still = [
            b.cache_name for b in walk_bindings(t.spec.inputs) if b.cache_name is not None and absent(core, b)
        ]
        if still:
            for n in still:
                wait_for(core, n, t)
        else:
            core.life.ready(t, f"input {name} exists")


def absent(core: Core, b: FileBinding) -> bool:
    """An input that does not exist yet: a temp with no copy, a client file not yet whole."""
    name = b.cache_name
    if name is None:
        return False
    if b.kind == FileKind.TEMP:
        return not core.catalog.available(name)
    return b.kind in (FileKind.LOCAL, FileKind.BUFFER) and name not in core.known_files


def producer_ended(core: Core, t: TaskEntry) -> None:
    """The producer failed or was cancelled: what waits for its outputs can never run."""
    for b in t.spec.outputs:
        if b.kind != FileKind.TEMP or b.cache_name is None:
            continue
        for tid in core.waiting_for.pop(b.cache_name, set()):
            c = core.tasks.get(tid)
            if c is not None and c.state == S.WAITING:
                mine = next(
                    (i.remote_name for i in walk_bindings(c.spec.inputs) if i.cache_name == b.cache_name),
                    b.remote_name,
                )
                core.life.finish(
                    c,
                    S.FAILED,
                    Outcome.INPUT_MISSING,
                    error=f"input {mine!r} ({b.cache_name}) cannot be produced: task {t.spec.id} {t.state}",
                )


def on_worker_lost(core: Core, catalog: Catalog, w: WorkerEntry) -> None:
    """Files whose last copy went with the worker: re-make the temps still needed (or every
    temp still declared, with tune ``immediate-recovery``)."""
    eager = core.tunables.immediate_recovery
    for name in catalog.drop_worker(w.id, w.info.cache_group or w.info.node):
        if name in core.producers and (eager or needed(core, name)):
            regenerate(core, catalog, name, f"its only copy was on worker {w.id}")


def needed(core: Core, name: CacheName) -> bool:
    if core.waiting_for.get(name):
        return True
    return any(
        t.state not in (S.DONE, S.FAILED, S.CANCELLED)
        and any(b.cache_name == name for b in walk_bindings(t.spec.inputs))
        for t in core.tasks.values()
    )


def regenerate(core: Core, catalog: Catalog, name: CacheName, why: str) -> None:
    """Run the producer of ``name`` again; its consumers wait for the new copy."""
    pid = core.producers.get(name)
    p = core.tasks.get(pid) if pid is not None else None
    if p is None:
        return
    for t in list(core.tasks.values()):  # consumers that were about to run wait instead
        if t.state == S.READY and any(b.cache_name == name for b in walk_bindings(t.spec.inputs)):
            core.life.move(t, S.WAITING, f"input {name} lost")
            wait_for(core, name, t)
    if p.state != S.DONE:
        return  # already on its way again
    cannot = _why_unmakeable(core, catalog, p, set())
    if cannot is not None:  # what waits for the file fails, saying why
        for tid in core.waiting_for.pop(name, set()):
            c = core.tasks.get(tid)
            if c is not None and c.state == S.WAITING:
                error = f"input {name} cannot be made again: it was lost ({why}) and {cannot}"
                core.life.finish(c, S.FAILED, Outcome.INPUT_MISSING, error=error)
        return
    core.transactions.append(txformat.task_regenerate(p.spec.id, name, why))
    core.life.ready(
        p, f"regenerating {name}: {why}"
    )  # done -> ready: a rerun; a call goes to its library's queue
    for b in walk_bindings(p.spec.inputs):  # its own lost inputs come first
        if b.kind == FileKind.TEMP and b.cache_name is not None and not catalog.available(b.cache_name):
            core.life.move(p, S.WAITING, f"input {b.cache_name} lost too")
            wait_for(core, b.cache_name, p)
            regenerate(core, catalog, b.cache_name, f"task {p.spec.id} needs it")


def _why_unmakeable(core: Core, catalog: Catalog, p: TaskEntry, seen: set[TaskId]) -> str | None:
    """Why task ``p`` cannot run again to remake its output, or None if it can: its library
    was removed, or an input it needs again is lost and cannot be made (undeclared, say)."""
    seen.add(p.spec.id)
    if p.spec.kind == TaskKind.CALL and (p.spec.library or "") not in core.libraries:
        return f"its producer's library {p.spec.library!r} was removed"
    for b in walk_bindings(p.spec.inputs):
        name = b.cache_name
        if b.kind != FileKind.TEMP or name is None or catalog.available(name):
            continue
        q_id = core.producers.get(name)
        q_task = core.tasks.get(q_id) if q_id is not None else None
        if q_task is None:
            return f"its producer (task {p.spec.id}) read {name}, which is gone and was undeclared"
        if q_task.spec.id not in seen and q_task.state == S.DONE:
            deeper = _why_unmakeable(core, catalog, q_task, seen)
            if deeper is not None:
                return deeper
    return None


def fetch_sources(core: Core, name: CacheName) -> tuple[list[tuple[WorkerId, str]], str]:
    """Workers a client's ``fetch_file`` can get ``name`` from (id, transfer address), best
    first; when there are none, why, in words for the user."""
    from kubevine.manager.states import WorkerState

    cat = core.catalog
    live = [
        (wid, w.info.transfer_address)
        for wid in cat.holders.get(name, ())
        if (w := core.workers.get(wid)) is not None
        and w.state in (WorkerState.CONNECTED, WorkerState.DRAINING)
        and w.info.transfer_address
    ]
    live.sort(key=lambda s: (cat.failures.get(s[0], 0), cat.outgoing.get(s[0], 0)))
    sources = [(wid, addr) for wid, addr in live if addr is not None]
    if sources:
        return sources, ""
    pid = core.producers.get(name)
    p = core.tasks.get(pid) if pid is not None else None
    if p is not None and p.state != S.DONE:
        return [], f"no worker holds file {name}: the task that makes it ({pid}) is {p.state}"
    if p is not None:
        return [], f"no worker holds file {name} any more: its only copy was lost (task {pid} made it)"
    return [], f"no worker holds file {name}: no task has made or used it in this workflow"
