"""Pure placement: which run goes to which node, or why it fits nowhere. No I/O.

Rules: a run goes only to an `online` node whose labels satisfy its selector, whose `running`
is below `max_concurrent`, and where its resource requests fit beside those of the node's
active runs (a node that reports no allocatable CPUs or memory is not limited by them). Among
those the least loaded wins: the lowest share used of its scarcest resource (run slots, CPUs,
memory), then lower running, then node id.

Cost: nodes are grouped by identical label sets, a selector is matched once per group,
and each distinct selector keeps a heap of its candidate nodes (stale entries are
skipped lazily). Building that is O(nodes) per selector; each run then costs O(log nodes)
while the least loaded node fits it. `place()` builds it for one batch; a `Placer` keeps it
for many batches placed on the same snapshot, so with a kept placer a batch costs
O(runs·log nodes) whatever the node count.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from server.scheduler.selectors import Selector, Signature

# online takes runs; unhealthy (a reported condition fails) and quarantined (its starts kept
# failing) are online nodes held back
NodeState = Literal["online", "draining", "offline", "unhealthy", "quarantined"]


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    id: str
    labels: Mapping[str, str]
    running: int
    max_concurrent: int
    state: NodeState = "online"
    # allocatable resources (None: not reported, no limit) and the requests of its active runs
    cpu_millis: int | None = None
    memory_mb: int | None = None
    requested_cpu_millis: int = 0
    requested_memory_mb: int = 0


def avoid_time(at: datetime) -> str:
    """How a run's `avoid_nodes` stores times: ISO in UTC to the microsecond, so they compare as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class PendingRun:
    id: str
    selector: Selector
    avoid: frozenset[str] = frozenset()  # nodes it recently failed to start on through their fault
    cpu_millis: int = 0  # its requests (0: none)
    memory_mb: int = 0


@dataclass(frozen=True, slots=True)
class Assign:
    run_id: str
    node_id: str
    cpu_millis: int = 0  # the run's requests, which the apply step reserves with the slot
    memory_mb: int = 0


@dataclass(frozen=True, slots=True)
class Unschedulable:
    run_id: str
    reason: str
    # only busy nodes stand in its way (every one it could use is at capacity): it merely waits
    # for a slot, which is recorded in its message but earns no event
    waiting: bool = field(default=False, compare=False)


Decision = Assign | Unschedulable


def place(runs: Sequence[PendingRun], nodes: Sequence[NodeSnapshot]) -> list[Decision]:
    """One decision per run, in order; assignments made earlier in the batch count as load."""
    return Placer(nodes).place(runs)


class Placer:
    """Placement over one node snapshot, kept across batches: every assignment it hands out
    counts as load for the runs placed after it, in this batch or a later one. The inputs are
    never changed."""

    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self._cluster = _Cluster(nodes)

    def place(self, runs: Sequence[PendingRun]) -> list[Decision]:
        cluster = self._cluster
        decisions: list[Decision] = []
        for run in runs:
            pool = cluster.pool(run.selector)
            index = pool.take(run)
            if index is None:
                reason, waiting = pool.reason(run)
                decisions.append(Unschedulable(run.id, reason, waiting))
            else:
                decisions.append(Assign(run.id, cluster.nodes[index].id, run.cpu_millis, run.memory_mb))
        return decisions

    def has_room(self) -> bool:
        """Some online node has a free run slot: a run may still be placed on this snapshot."""
        return self._cluster.open > 0


@dataclass
class _Group:
    labels: Mapping[str, str]
    members: list[int] = field(default_factory=list)


_UNLIMITED = 1 << 62  # the allocatable amount of a resource a node does not report


class _Cluster:
    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.nodes = nodes
        # per node index, flat lists: the hot loops below read these, not the snapshots
        self.ids = [node.id for node in nodes]
        self.running = [node.running for node in nodes]
        self.limit = [node.max_concurrent if node.state == "online" else _NO_ROOM for node in nodes]
        self.divisor = [max(node.max_concurrent, 1) for node in nodes]
        self.cpu_used = [node.requested_cpu_millis for node in nodes]
        self.memory_used = [node.requested_memory_mb for node in nodes]
        self.cpu_total = [_UNLIMITED if node.cpu_millis is None else node.cpu_millis for node in nodes]
        self.memory_total = [_UNLIMITED if node.memory_mb is None else node.memory_mb for node in nodes]
        groups: dict[frozenset[tuple[str, str]], _Group] = {}
        for index, node in enumerate(nodes):
            key = frozenset(node.labels.items())
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(node.labels)
            group.members.append(index)
        self.groups = list(groups.values())
        self._pools: dict[Signature, _Pool] = {}
        self.open = sum(1 for index in range(len(nodes)) if self.has_room(index))  # nodes with a free slot

    def pool(self, selector: Selector) -> _Pool:
        pool = self._pools.get(selector.signature)
        if pool is None:
            matching = [group for group in self.groups if selector.matches(group.labels)]
            pool = self._pools[selector.signature] = _Pool(self, selector, matching)
        return pool

    def entry(self, index: int) -> tuple[float, int, str, int]:
        """Heap key: the share used of the node's scarcest resource, then running, then id."""
        running = self.running[index]
        share = running / self.divisor[index]
        cpu_total, memory_total = self.cpu_total[index], self.memory_total[index]
        if cpu_total != _UNLIMITED:
            share = max(share, self.cpu_used[index] / cpu_total if cpu_total else 1.0)
        if memory_total != _UNLIMITED:
            share = max(share, self.memory_used[index] / memory_total if memory_total else 1.0)
        return (share, running, self.ids[index], index)

    def has_room(self, index: int) -> bool:
        return self.running[index] < self.limit[index]

    def fits(self, index: int, run: PendingRun) -> bool:
        """The fit rule's resource half (the other half, a free run slot, is `has_room`)."""
        return (
            self.cpu_used[index] + run.cpu_millis <= self.cpu_total[index]
            and self.memory_used[index] + run.memory_mb <= self.memory_total[index]
        )

    def shortfall(self, index: int, run: PendingRun) -> str | None:
        """Which resource does not fit the run there: memory is named first, as it is the one a
        node cannot lend out over time."""
        if self.memory_used[index] + run.memory_mb > self.memory_total[index]:
            return "memory"
        if self.cpu_used[index] + run.cpu_millis > self.cpu_total[index]:
            return "cpu"
        return None

    def take(self, index: int, run: PendingRun) -> None:
        self.running[index] += 1
        if self.running[index] == self.limit[index]:
            self.open -= 1
        self.cpu_used[index] += run.cpu_millis
        self.memory_used[index] += run.memory_mb


_NO_ROOM = float("-inf")  # the limit of a node that is not online: never has room


class _Pool:
    """Candidate nodes of one selector, least loaded first."""

    def __init__(self, cluster: _Cluster, selector: Selector, matching: list[_Group]) -> None:
        self.cluster = cluster
        self.selector = selector
        self.matching = matching
        self.heap = [cluster.entry(i) for group in matching for i in group.members if cluster.has_room(i)]
        heapq.heapify(self.heap)
        # requests (cpu, memory) a full scan found no room for; loads only grow on this snapshot,
        # so a request at least as large in both fails too, without a scan
        self._failed: list[tuple[int, int]] = []
        self._reasons: dict[tuple[int, int], tuple[str, bool]] = {}

    def take(self, run: PendingRun) -> int | None:
        cluster, heap = self.cluster, self.heap
        request = (run.cpu_millis, run.memory_mb)
        if not run.avoid and any(request[0] >= cpu and request[1] >= mem for cpu, mem in self._failed):
            return None
        skipped = []
        try:
            while heap:
                entry = heapq.heappop(heap)
                _, running, node_id, index = entry
                if running != cluster.running[index]:
                    # assigned through another selector's pool since this entry was pushed
                    if cluster.has_room(index):
                        heapq.heappush(heap, cluster.entry(index))
                    continue
                if node_id in run.avoid or not cluster.fits(index, run):
                    skipped.append(entry)  # usable by other runs of this pool: put back afterwards
                    continue
                cluster.take(index, run)
                if cluster.has_room(index):
                    heapq.heappush(heap, cluster.entry(index))
                return index
            if not run.avoid:
                self._failed.append(request)
            return None
        finally:
            for entry in skipped:
                heapq.heappush(heap, entry)

    def reason(self, run: PendingRun) -> tuple[str, bool]:
        """Why nothing fits, counted by cause, and whether the run merely waits for a slot;
        stable for a request size once the pool has no room for it (loads only grow on a
        snapshot), so computed once per size unless the run avoids some nodes."""
        if run.avoid:
            return self._explain(run)
        key = (run.cpu_millis, run.memory_mb)
        reason = self._reasons.get(key)
        if reason is None:
            reason = self._reasons[key] = self._explain(run)
        return reason

    def _explain(self, run: PendingRun) -> tuple[str, bool]:
        cluster = self.cluster
        total = len(cluster.nodes)
        matching_count = sum(len(group.members) for group in self.matching)
        causes: Counter[str] = Counter()
        full: set[tuple[int, int]] = set()
        for group in self.matching:
            for index in group.members:
                node = cluster.nodes[index]
                if node.state != "online":
                    causes[node.state] += 1
                elif not cluster.has_room(index):
                    causes["full"] += 1
                    full.add((cluster.running[index], node.max_concurrent))
                elif (short := cluster.shortfall(index, run)) is not None:
                    causes[short] += 1
                else:
                    causes["avoided"] += 1
        parts = []
        if total - matching_count:
            parts.append(f"{total - matching_count} do not match {self.selector.describe()}")
        if causes["full"]:
            figure = f" ({next(iter(full))[0]}/{next(iter(full))[1]})" if len(full) == 1 else ""
            parts.append(f"{causes['full']} at capacity{figure}")
        for cause, words in CAUSES:
            if causes[cause]:
                parts.append(f"{causes[cause]} {words}")
        reason = f"0/{total} nodes available: " + (", ".join(parts) if parts else "no nodes are registered")
        return reason, causes["full"] > 0 and causes.total() == causes["full"]


CAUSES = (
    ("memory", "insufficient memory"),
    ("cpu", "insufficient cpu"),
    ("avoided", "failed to start this run recently"),
    ("unhealthy", "unhealthy (a condition fails)"),
    ("quarantined", "quarantined (starts kept failing)"),
    ("draining", "draining"),
    ("offline", "offline"),
)
