"""The file catalog: which worker and which node holds which file, and where to fetch from.

Pure bookkeeping for the scheduler. A file's replicas are tracked per worker and per cache
group — the workers that share one cache directory (in a cluster: the worker pods of one
node, mounting its hostPath) — since a file in a group's cache is on every worker of it.
"node" below means such a group. For each transfer the catalog picks the cheapest source: the node itself (no
transfer), a peer that holds it — the least busy, avoiding peers that keep failing — then
the manager, then the URL. It also knows which transfers are under way, so a file that is
already travelling to a node is awaited there rather than sent twice, and a popular file
fans out from the peers that already have it instead of from one source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevine.ids import CacheName, TaskId, WorkerId
from kubevine.protocol import CacheLevel, FileSource, StageIn

MAX_OUT = 4  # default: transfers one source (a worker, the manager, a URL) serves at once
BAD_SOURCE = 3  # failures after which a peer is used only as a last resort


@dataclass
class FileInfo:
    size: int | None = None
    checksum: str | None = None
    producer: TaskId | None = None  # temps: the task whose output it is
    url: str | None = None


@dataclass
class Catalog:
    holders: dict[CacheName, set[WorkerId]] = field(default_factory=dict)
    node_count: dict[CacheName, dict[str, int]] = field(default_factory=dict)
    info: dict[CacheName, FileInfo] = field(default_factory=dict)
    outgoing: dict[str, int] = field(default_factory=dict)  # source ("manager" or worker) -> transfers
    inflight: dict[tuple[WorkerId, CacheName], str] = field(default_factory=dict)  # (dest, file) -> source
    arriving: dict[CacheName, set[str]] = field(default_factory=dict)  # file -> nodes it travels to
    failures: dict[str, int] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)  # source -> its last failure
    source_limit: int = MAX_OUT  # concurrent transfers from one source (Settings.transfers_per_source)
    peer_limit: int | None = None  # ... from one worker, when set (tune worker-source-max-transfers)
    forgive_after: float | None = None  # seconds before a failing source is trusted again (tune)
    # replicas added (cache group) or removed (None) since the core last took them: persisted
    journal: dict[tuple[WorkerId, CacheName], str | None] = field(default_factory=dict)

    # -- replicas -------------------------------------------------------------------

    def add(self, name: CacheName, wid: WorkerId, node: str) -> None:
        held = self.holders.setdefault(name, set())
        if wid not in held:
            held.add(wid)
            self.journal[(wid, name)] = node
            nodes = self.node_count.setdefault(name, {})
            nodes[node] = nodes.get(node, 0) + 1

    def remove(self, name: CacheName, wid: WorkerId, node: str) -> None:
        held = self.holders.get(name)
        if held is None or wid not in held:
            return
        held.discard(wid)
        self.journal[(wid, name)] = None
        nodes = self.node_count.get(name, {})
        nodes[node] = nodes.get(node, 1) - 1
        if nodes[node] <= 0:
            nodes.pop(node, None)
        if not held:
            self.holders.pop(name, None)
            self.node_count.pop(name, None)

    def forget(self, name: CacheName) -> set[WorkerId]:
        """Drop every trace of a file (undeclared); the workers that held it."""
        held = self.holders.pop(name, set())
        for wid in held:
            self.journal[(wid, name)] = None
        self.node_count.pop(name, None)
        self.info.pop(name, None)
        self.arriving.pop(name, None)
        return held

    def drop_worker(self, wid: WorkerId, node: str) -> list[CacheName]:
        """Forget a lost worker's files; the names no worker holds any more."""
        lost = []
        for name in [n for n, held in self.holders.items() if wid in held]:
            self.remove(name, wid, node)
            if name not in self.holders:
                lost.append(name)
        for (dest, name), src in list(self.inflight.items()):
            if dest == wid or src == wid:
                self.done(dest, name)
        return lost

    def available(self, name: CacheName) -> bool:
        return bool(self.holders.get(name))

    def on_node(self, name: CacheName, node: str) -> bool:
        return node in self.node_count.get(name, {})

    # -- transfers ------------------------------------------------------------------

    def plan(
        self,
        name: CacheName,
        dest: WorkerId,
        node: str,
        peers: dict[WorkerId, tuple[str | None, str]],
        manager_has: bool,
        cache: CacheLevel,
        serving: set[str] | None = None,
        from_peers: bool = True,
    ) -> StageIn | None:
        """Sources for ``dest`` to fetch ``name`` from, best first; None: wait, it is on its way.

        ``peers`` maps worker ids to (transfer address, node) for connected workers. The limit
        of transfers per source gates a task, not each of its files: a source in ``serving``
        already serves this task's other inputs and takes this one too (a task reading more
        files from one peer than the limit would otherwise wait for ever). ``from_peers``
        False: no peer is offered (peer transfers disabled, for the workflow or this file).
        """
        info = self.info.get(name) or FileInfo()
        stage = StageIn(cache_name=name, sources=[], checksum=info.checksum, size=info.size, cache=cache)
        if self.on_node(name, node) or node in self.arriving.get(name, set()):
            return stage  # the node has it, or will: the worker waits for the node's copy
        holders = [
            w
            for w in (self.holders.get(name, ()) if from_peers else ())
            if w != dest and w in peers and peers[w][0] is not None
        ]
        good = sorted((w for w in holders if self.failures.get(w, 0) < BAD_SOURCE), key=self.busy)
        bad = sorted((w for w in holders if self.failures.get(w, 0) >= BAD_SOURCE), key=self.busy)
        if not good and self.arriving.get(name) and not info.url:
            return None  # its first copy is still travelling: fetch from that one once it lands
        peer = [FileSource(kind="peer", address=peers[w][0], worker=w) for w in good]
        origin = [FileSource(kind="manager")] if manager_has else []
        if info.url:
            origin.append(FileSource(kind="url", address=info.url))
        last = [FileSource(kind="peer", address=peers[w][0], worker=w) for w in bad]
        # Peers first: each copy that lands is one more source, so a popular file fans out as
        # a tree. The manager and the URL serve only when no sound peer has it.
        candidates = peer if peer else origin + last
        taken = serving if serving is not None else set()
        first = next(
            (
                s
                for s in candidates
                if self.source_key(s) in taken or self.busy(self.source_key(s)) < self.limit(s)
            ),
            None,
        )
        if first is None and candidates:
            return None  # every source that should serve it is at its limit: wait for one
        stage.sources = ([first] if first else []) + [s for s in peer + origin + last if s is not first]
        if first is not None:
            src = self.source_key(first)
            taken.add(src)
            self.inflight[(dest, name)] = src
            self.outgoing[src] = self.outgoing.get(src, 0) + 1
            self.arriving.setdefault(name, set()).add(node)
        return stage

    def limit(self, s: FileSource) -> int:
        """Transfers ``s`` may serve at once."""
        return self.peer_limit if s.kind == "peer" and self.peer_limit is not None else self.source_limit

    def busy(self, source: str) -> int:
        """Transfers ``source`` is serving now."""
        return self.outgoing.get(source, 0)

    @staticmethod
    def source_key(s: FileSource) -> str:
        """Who serves a transfer from ``s``: a worker id, "manager", or "url:<url>"."""
        if s.kind == "peer" and s.worker:
            return s.worker
        if s.kind == "url":
            return f"url:{s.address}"
        return s.kind

    def done(self, dest: WorkerId, name: CacheName, node: str | None = None) -> None:
        """A transfer to ``dest`` ended (arrived or gave up)."""
        src = self.inflight.pop((dest, name), None)
        if src is not None:
            self.outgoing[src] = max(0, self.outgoing.get(src, 0) - 1)
        if node is not None:
            nodes = self.arriving.get(name)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del self.arriving[name]
        elif src is not None:
            self.arriving.pop(name, None)

    def release(self, dest: WorkerId, name: CacheName, source: str | None = None) -> None:
        """The planned transfer to ``dest`` no longer occupies its source (``source`` failed
        it, or ``dest`` found the file on its node); the file may still be on its way."""
        src = self.inflight.get((dest, name))
        if src is not None and (source is None or source == src):
            del self.inflight[(dest, name)]
            self.outgoing[src] = max(0, self.outgoing.get(src, 0) - 1)

    def failed_source(self, source: str, now: float = 0.0) -> None:
        self.failures[source] = self.failures.get(source, 0) + 1
        self.failed_at[source] = now

    def forgive(self, now: float) -> None:
        """Trust again the sources whose last failure is older than ``forgive_after``."""
        if self.forgive_after is None:
            return
        for source in [s for s, t in self.failed_at.items() if now - t > self.forgive_after]:
            del self.failed_at[source]
            self.failures.pop(source, None)
