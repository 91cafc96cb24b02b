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

MAX_OUT = 4  # transfers one source serves at once before others are preferred
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
    ) -> StageIn | None:
        """Sources for ``dest`` to fetch ``name`` from, best first; None: wait, it is on its way.

        ``peers`` maps worker ids to (transfer address, node) for connected workers.
        """
        info = self.info.get(name) or FileInfo()
        stage = StageIn(cache_name=name, sources=[], checksum=info.checksum, size=info.size, cache=cache)
        if self.on_node(name, node) or node in self.arriving.get(name, set()):
            return stage  # the node has it, or will: the worker waits for the node's copy
        holders = [
            w for w in self.holders.get(name, ()) if w != dest and w in peers and peers[w][0] is not None
        ]
        holders.sort(key=lambda w: (self.failures.get(w, 0) >= BAD_SOURCE, self.outgoing.get(w, 0)))
        if not holders and self.arriving.get(name) and not info.url:
            return None  # its first copy is still travelling: fetch from that one once it lands
        if holders and self.outgoing.get(holders[0], 0) >= MAX_OUT and self.arriving.get(name):
            return None  # every holder is busy and more copies are on their way: wait for them
        for w in holders:
            stage.sources.append(FileSource(kind="peer", address=peers[w][0], worker=w))
        if manager_has:
            stage.sources.append(FileSource(kind="manager"))
        if info.url:
            stage.sources.append(FileSource(kind="url", address=info.url))
        if stage.sources:
            first = stage.sources[0]
            src = first.worker if first.kind == "peer" and first.worker else first.kind
            self.inflight[(dest, name)] = src
            self.outgoing[src] = self.outgoing.get(src, 0) + 1
            self.arriving.setdefault(name, set()).add(node)
        return stage

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

    def failed_source(self, source: str) -> None:
        self.failures[source] = self.failures.get(source, 0) + 1
