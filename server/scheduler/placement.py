"""Pure placement: which run goes to which node, or why it fits nowhere. No I/O.

Rules: a run goes only to an `online` node whose labels satisfy its selector and whose
`running` is below `max_concurrent`; among those the least loaded wins, by lowest
running/max_concurrent, then lower running, then node id.

Cost: nodes are grouped by identical label sets, a selector is matched once per group,
and each distinct selector keeps a heap of its candidate nodes (stale entries are
skipped lazily). Building that is O(nodes) per selector; each run then costs O(log nodes).
`place()` builds it for one batch; a `Placer` keeps it for many batches placed on the same
snapshot, so with a kept placer a batch costs O(runs·log nodes) whatever the node count.
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


def avoid_time(at: datetime) -> str:
    """How a run's `avoid_nodes` stores times: ISO in UTC to the microsecond, so they compare as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class PendingRun:
    id: str
    selector: Selector
    avoid: frozenset[str] = frozenset()  # nodes it recently failed to start on through their fault


@dataclass(frozen=True, slots=True)
class Assign:
    run_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class Unschedulable:
    run_id: str
    reason: str


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
            index = pool.take(run.avoid)
            if index is None:
                decisions.append(Unschedulable(run.id, pool.reason(run.avoid)))
            else:
                decisions.append(Assign(run.id, cluster.nodes[index].id))
        return decisions


@dataclass
class _Group:
    labels: Mapping[str, str]
    members: list[int] = field(default_factory=list)


class _Cluster:
    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.nodes = nodes
        # per node index, flat lists: the hot loops below read these, not the snapshots
        self.ids = [node.id for node in nodes]
        self.running = [node.running for node in nodes]
        self.limit = [node.max_concurrent if node.state == "online" else _NO_ROOM for node in nodes]
        self.divisor = [max(node.max_concurrent, 1) for node in nodes]
        groups: dict[frozenset[tuple[str, str]], _Group] = {}
        for index, node in enumerate(nodes):
            key = frozenset(node.labels.items())
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(node.labels)
            group.members.append(index)
        self.groups = list(groups.values())
        self._pools: dict[Signature, _Pool] = {}

    def pool(self, selector: Selector) -> _Pool:
        pool = self._pools.get(selector.signature)
        if pool is None:
            matching = [group for group in self.groups if selector.matches(group.labels)]
            pool = self._pools[selector.signature] = _Pool(self, selector, matching)
        return pool

    def entry(self, index: int) -> tuple[float, int, str, int]:
        running = self.running[index]
        return (running / self.divisor[index], running, self.ids[index], index)

    def has_room(self, index: int) -> bool:
        return self.running[index] < self.limit[index]


_NO_ROOM = float("-inf")  # the limit of a node that is not online: never has room


class _Pool:
    """Candidate nodes of one selector, least loaded first."""

    def __init__(self, cluster: _Cluster, selector: Selector, matching: list[_Group]) -> None:
        self.cluster = cluster
        self.selector = selector
        self.matching = matching
        running, limit, divisor, ids = cluster.running, cluster.limit, cluster.divisor, cluster.ids
        self.heap = [
            (running[i] / divisor[i], running[i], ids[i], i)
            for group in matching
            for i in group.members
            if running[i] < limit[i]
        ]
        heapq.heapify(self.heap)
        self._reason: str | None = None

    def take(self, avoid: frozenset[str] = frozenset()) -> int | None:
        cluster, heap = self.cluster, self.heap
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
                if node_id in avoid:  # usable by other runs of this pool: put back afterwards
                    skipped.append(entry)
                    continue
                cluster.running[index] += 1
                if cluster.has_room(index):
                    heapq.heappush(heap, cluster.entry(index))
                return index
            return None
        finally:
            for entry in skipped:
                heapq.heappush(heap, entry)

    def reason(self, avoid: frozenset[str] = frozenset()) -> str:
        """Why nothing fits, counted by cause; stable once the pool ran dry (loads only grow in a
        batch), so it is computed once unless the run avoids some nodes."""
        if avoid:
            return self._explain(avoid)
        if self._reason is None:
            self._reason = self._explain(avoid)
        return self._reason

    def _explain(self, avoid: frozenset[str]) -> str:
        cluster = self.cluster
        total = len(cluster.nodes)
        matching_count = sum(len(group.members) for group in self.matching)
        states: Counter[str] = Counter()
        full: set[tuple[int, int]] = set()
        for group in self.matching:
            for index in group.members:
                node = cluster.nodes[index]
                if node.state == "online" and node.id in avoid and cluster.has_room(index):
                    states["avoided"] += 1
                    continue
                states[node.state] += 1
                if node.state == "online":
                    full.add((cluster.running[index], node.max_concurrent))
        parts = []
        if total - matching_count:
            parts.append(f"{total - matching_count} do not match {self.selector.describe()}")
        if states["online"]:
            figure = f" ({next(iter(full))[0]}/{next(iter(full))[1]})" if len(full) == 1 else ""
            parts.append(f"{states['online']} at capacity{figure}")
        for state, words in HELD_BACK:
            if states[state]:
                parts.append(f"{states[state]} {words}")
        return f"0/{total} nodes available: " + (", ".join(parts) if parts else "no nodes are registered")


HELD_BACK = (
    ("avoided", "failed to start this run recently"),
    ("unhealthy", "unhealthy (a condition fails)"),
    ("quarantined", "quarantined (starts kept failing)"),
    ("draining", "draining"),
    ("offline", "offline"),
)
