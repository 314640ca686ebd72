"""Prometheus metrics of one apiserver process (prometheus-client, a registry of its own).

Counters and histograms count what this process saw (heartbeats, requests, scheduling passes);
on several replicas sum them. The fleet gauges (nodes and runs by status, the queue) are read
from the database at each scrape, so every replica reports the same figures: take `max`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nodeapi.models import NodeStatus, RunStatus

NODE_STATUSES: tuple[NodeStatus, ...] = ("online", "offline", "draining")
RUN_STATUSES: tuple[RunStatus, ...] = (
    "queued",
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "lost",
)
# seconds: a pass places and commits a batch in milliseconds; a slow database shows at the top
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.nodes = Gauge("agentnodes_nodes", "Registered nodes by status.", ["status"], registry=registry)
        self.nodes_unschedulable = Gauge(
            "agentnodes_nodes_unschedulable",
            "Online nodes that take no new runs: a health condition fails, or they are quarantined.",
            registry=registry,
        )
        self.runs = Gauge("agentnodes_runs", "Runs by status.", ["status"], registry=registry)
        self.queue_depth = Gauge(
            "agentnodes_queue_depth", "Runs waiting to be placed (status queued).", registry=registry
        )
        self.oldest_queued = Gauge(
            "agentnodes_oldest_queued_run_age_seconds",
            "Age of the oldest run still queued, 0 when none is.",
            registry=registry,
        )
        self.heartbeats = Counter(
            "agentnodes_heartbeats", "Node heartbeats this apiserver answered.", registry=registry
        )
        self.placement = Histogram(
            "agentnodes_placement_seconds",
            "Duration of a scheduling pass: load, place and commit one batch of runs.",
            buckets=PASS_BUCKETS,
            registry=registry,
        )
        self.placed = Counter("agentnodes_runs_placed", "Runs placed on a node.", registry=registry)
        self.http_requests = Counter(
            "agentnodes_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "code"],
            registry=registry,
        )
        self.leader = Gauge(
            "agentnodes_leader",
            "1 while this replica holds the lease for fleet-wide checks (offline runs, deadlines).",
            registry=registry,
        )

    def set_fleet(
        self,
        nodes: dict[str, int],
        unschedulable: int,
        runs: dict[str, int],
        oldest_queued_age: float,
    ) -> None:
        for status in NODE_STATUSES:
            self.nodes.labels(status=status).set(nodes.get(status, 0))
        self.nodes_unschedulable.set(unschedulable)
        for run_status in RUN_STATUSES:
            self.runs.labels(status=run_status).set(runs.get(run_status, 0))
        self.queue_depth.set(runs.get("queued", 0))
        self.oldest_queued.set(max(0.0, oldest_queued_age))
