"""The nodemanager's own Prometheus metrics, served on METRICS_HOST:METRICS_PORT when set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from nodeapi import models as m


class NodeMetrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.heartbeats = Counter(
            "agentnodes_node_heartbeats",
            "Heartbeats this node sent, by result (ok, error).",
            ["result"],
            registry=registry,
        )
        self.runs_active = Gauge(
            "agentnodes_node_runs_active", "Runs this node is executing or finishing.", registry=registry
        )
        self.runs_waiting = Gauge(
            "agentnodes_node_runs_waiting",
            "Runs assigned here that wait for a free slot (MAX_CONCURRENT).",
            registry=registry,
        )
        self.runs_started = Counter(
            "agentnodes_node_runs_launched", "Assignments this node took on.", registry=registry
        )
        self.condition_ok = Gauge(
            "agentnodes_node_condition_ok",
            "1 while the health check passes, 0 while it fails.",
            ["type"],
            registry=registry,
        )

    def heartbeat_built(self, request: m.HeartbeatRequest, waiting: int) -> None:
        self.runs_active.set(len(request.active_runs) - waiting)
        self.runs_waiting.set(waiting)
        for condition in request.conditions:
            self.condition_ok.labels(type=condition.type).set(1 if condition.ok else 0)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
