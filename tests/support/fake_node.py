"""A scripted stand-in for a NodeManager: heartbeats, work polls and node events by hand,
through the typed client, so API tests control every step of a run's life."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.support.wait import eventually


class FakeNode:
    def __init__(
        self, client: Client, node_id: str, labels: dict[str, str] | None = None, max_concurrent: int = 2
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.labels = labels or {}
        self.max_concurrent = max_concurrent
        self._seq: defaultdict[str, int] = defaultdict(int)
        self.node_token: str | None = None
        self.held: set[str] = set()  # runs claimed and not ended: listed in heartbeats
        self.conditions: list[m.ConditionReport] = []  # reported with every heartbeat

    def heartbeat(self, active_runs: list[str] | None = None) -> m.HeartbeatResponse:
        """With `active_runs` None, it lists the runs it claimed and has not ended, as a node does."""
        request = m.HeartbeatRequest(
            node_id=self.node_id,
            labels=self.labels,
            capacity=m.Capacity(max_concurrent=self.max_concurrent),
            active_runs=sorted(self.held) if active_runs is None else active_runs,
            conditions=self.conditions,
        )
        reply = self.client.send(Calls.heartbeat(request))
        if reply.node_token:  # registered with the join token: act with the node's own credential
            self.client.set_token(reply.node_token)
            self.node_token = reply.node_token
        return reply

    def poll(self, wait: float = 0.0) -> m.WorkResponse:
        return self.client.send(Calls.poll_work(self.node_id, wait=wait))

    def report(self, run_id: str, *events: tuple[str, dict[str, Any]]) -> m.NodeEventAck:
        batch = self.batch(run_id, *events)
        return self.send(run_id, batch)

    def batch(self, run_id: str, *events: tuple[str, dict[str, Any]]) -> m.NodeEventBatch:
        items = []
        for kind, data in events:
            self._seq[run_id] += 1
            items.append(m.NodeEventIn(node_seq=self._seq[run_id], type=kind, data=data))
        return m.NodeEventBatch(node_id=self.node_id, events=items)

    def send(self, run_id: str, batch: m.NodeEventBatch) -> m.NodeEventAck:
        ack = self.client.send(Calls.post_run_events(run_id, batch))
        for event in batch.events:
            if event.type in ("claimed", "started"):
                self.held.add(run_id)
            elif event.type in ("exited", "failed", "cancelled"):
                self.held.discard(run_id)
        return ack

    def start(self, run_id: str) -> m.NodeEventAck:
        return self.report(run_id, ("claimed", {}), ("started", {"container_id": f"c-{run_id}"}))


def run_status(client: Client, run_id: str) -> str:
    return client.send(Calls.get_run(run_id)).status


def wait_run_status(client: Client, run_id: str, status: str, timeout: float = 10.0) -> m.Run:
    def check() -> m.Run | None:
        run = client.send(Calls.get_run(run_id))
        return run if run.status == status else None

    return eventually(check, timeout)


def event_types(client: Client, run_id: str) -> list[str]:
    return [event.type for event in client.send(Calls.run_events(run_id)).items]
