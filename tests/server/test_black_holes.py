"""A broken node must not attract the queue: it fails every run fast, so it always looks the least
loaded. Conditions keep a node that knows it is broken out of placement; a start that fails
through the node's fault puts the run back in the queue, away from that node, and enough of them
in a row quarantine the node for a while (through a real apiserver process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, event_types, wait_run_status
from tests.support.wait import eventually

NODE_FAULT = {"reason": "cannot create the workspace: [Errno 28] No space left on device", "cause": "node"}


@pytest.fixture
def client(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver(
        {
            "NODE_HEARTBEAT_INTERVAL": "5",
            "NODE_OFFLINE_AFTER": "60",
            "QUARANTINE_AFTER": "2",
            "QUARANTINE_BACKOFF": "2",
        }
    )
    with Client(server.base_url) as api:
        yield api


def submit(api: Client) -> m.Run:
    return api.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))


def placed_on(api: Client, run_id: str) -> str:
    run = wait_run_status(api, run_id, "scheduled")
    assert run.node_id is not None
    return run.node_id


def fail_to_start(node: FakeNode, run_id: str, data: dict[str, object]) -> m.NodeEventAck:
    return node.report(run_id, ("claimed", {}), ("failed", data))


def get_node(api: Client, node_id: str) -> m.Node:
    return api.send(Calls.get_node(node_id))


def test_a_start_failure_of_the_nodes_making_sends_the_run_elsewhere(client: Client) -> None:
    broken, healthy = (
        FakeNode(client, "broken", max_concurrent=4),
        FakeNode(client, "healthy", max_concurrent=4),
    )
    broken.heartbeat()
    run = submit(client)
    assert placed_on(client, run.id) == "broken"
    healthy.heartbeat()  # registers only now: `broken` was the only choice

    ack = fail_to_start(broken, run.id, NODE_FAULT)

    assert ack.status == "queued"  # the node learns the run is no longer its to finish
    assert placed_on(client, run.id) == "healthy"  # although `broken` is emptier
    assert client.send(Calls.get_run(run.id)).attempts == 2
    events = client.send(Calls.run_events(run.id)).items
    kinds = [e.type for e in events]
    requeued = events[kinds.index("requeued")]
    assert kinds[kinds.index("requeued") - 1] == "failed"
    assert "No space left on device" in str(requeued.data["reason"])
    assert requeued.data["node_id"] == "broken"
    assert get_node(client, "broken").running == 0
    healthy.start(run.id)
    healthy.report(run.id, ("exited", {"exit_code": 0}))
    assert wait_run_status(client, run.id, "succeeded").node_id == "healthy"


def test_a_start_failure_of_the_runs_making_fails_it(client: Client) -> None:
    node = FakeNode(client, "n1")
    node.heartbeat()
    run = submit(client)
    placed_on(client, run.id)

    ack = fail_to_start(node, run.id, {"reason": 'exec: "nope": not found', "cause": "run"})

    assert ack.status == "failed"
    assert "requeued" not in event_types(client, run.id)
    assert get_node(client, "n1").schedulable  # the run's fault says nothing about the node


def test_a_run_waits_rather_than_go_back_to_the_node_that_failed_it(client: Client) -> None:
    node = FakeNode(client, "only", max_concurrent=4)
    node.heartbeat()
    run = submit(client)
    placed_on(client, run.id)

    fail_to_start(node, run.id, NODE_FAULT)

    def reason() -> str | None:
        events = client.send(Calls.run_events(run.id)).items
        found = [e.data.get("reason") for e in events if e.type == "unschedulable"]
        return str(found[-1]) if found else None

    assert "1 failed to start this run recently" in eventually(reason, timeout=10)
    assert client.send(Calls.get_run(run.id)).status == "queued"
    other = submit(client)  # other runs still use the node
    assert placed_on(client, other.id) == "only"


def test_a_run_placed_too_often_fails_with_the_last_cause(apiserver: ApiServerFactory) -> None:
    server = apiserver({"RUN_MAX_ATTEMPTS": "1", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api:
        node = FakeNode(api, "n1")
        node.heartbeat()
        run = submit(api)
        placed_on(api, run.id)

        ack = fail_to_start(node, run.id, NODE_FAULT)

        assert ack.status == "failed"
        assert "No space left on device" in (api.send(Calls.get_run(run.id)).message or "")


def test_starts_failing_in_a_row_quarantine_the_node_for_a_while(client: Client) -> None:
    node = FakeNode(client, "flaky", max_concurrent=8)
    node.heartbeat()
    first, second = submit(client), submit(client)
    assert {placed_on(client, first.id), placed_on(client, second.id)} == {"flaky"}

    fail_to_start(node, first.id, NODE_FAULT)
    assert get_node(client, "flaky").schedulable  # one failure is not yet a pattern
    fail_to_start(node, second.id, NODE_FAULT)

    held = get_node(client, "flaky")
    assert held.status == "online"  # alive, just held back
    assert not held.schedulable
    quarantine = [c for c in held.conditions if c.type == "quarantine"]
    assert len(quarantine) == 1
    assert not quarantine[0].ok
    assert quarantine[0].since is not None
    assert "no new runs until" in quarantine[0].message
    waiting = submit(client)
    time.sleep(0.5)  # nothing happens during the quarantine: the point of this wait
    assert client.send(Calls.get_run(waiting.id)).status == "queued"

    # QUARANTINE_BACKOFF=2: lifted by itself, and the waiting run goes there
    assert placed_on(client, waiting.id) == "flaky"
    lifted = get_node(client, "flaky")
    assert lifted.schedulable
    assert all(c.type != "quarantine" for c in lifted.conditions)
    node.start(waiting.id)  # a start clears the count: one more failure does not quarantine it
    third = submit(client)
    placed_on(client, third.id)
    fail_to_start(node, third.id, NODE_FAULT)
    assert get_node(client, "flaky").schedulable


def test_a_failing_condition_keeps_new_runs_away_until_it_passes(client: Client) -> None:
    sick, well = FakeNode(client, "sick", max_concurrent=4), FakeNode(client, "well", max_concurrent=4)
    sick.conditions = [
        m.ConditionReport(type="runtime", ok=True, message="docker 26"),
        m.ConditionReport(type="disk", ok=False, message="40 MiB free under /var/lib/agentnodes"),
    ]
    sick.heartbeat()
    well.heartbeat()

    listed = get_node(client, "sick")
    assert listed.status == "online"
    assert not listed.schedulable
    disk = next(c for c in listed.conditions if c.type == "disk")
    assert not disk.ok
    assert "40 MiB free" in disk.message
    assert disk.since is not None
    runs = [submit(client) for _ in range(3)]
    assert {placed_on(client, run.id) for run in runs} == {"well"}
    failing_since = disk.since

    sick.heartbeat()  # still failing: `since` stays where the failure began
    assert next(c for c in get_node(client, "sick").conditions if c.type == "disk").since == failing_since

    sick.conditions[1] = m.ConditionReport(type="disk", ok=True, message="20000 MiB free")
    sick.heartbeat()
    repaired = get_node(client, "sick")
    assert repaired.schedulable
    assert next(c for c in repaired.conditions if c.type == "disk").since != failing_since
    later = submit(client)
    assert placed_on(client, later.id) == "sick"  # the emptier node again


def test_held_back_nodes_are_filtered_and_shown(client: Client) -> None:
    sick = FakeNode(client, "sick")
    sick.conditions = [m.ConditionReport(type="workspace", ok=False, message="cannot write in /ws")]
    sick.heartbeat()
    FakeNode(client, "well").heartbeat()

    nodes = {node.id: node for node in client.send(Calls.list_nodes(status="online")).items}
    assert nodes["sick"].schedulable is False
    assert nodes["well"].schedulable is True
