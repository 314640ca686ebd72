"""Regression tests of failures that left work stuck or lost (through a real apiserver process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, event_types
from tests.support.wait import eventually


@pytest.fixture
def client(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api:
        yield api


def test_a_command_whose_answer_was_lost_is_handed_out_again(client: Client) -> None:
    """Regression: a command was marked delivered when read, so a node that never got the answer
    of that poll never saw the command, and the proxy test timed out."""
    node = FakeNode(client, "n1")
    node.heartbeat()
    outcome: list[m.ProxyTestResult] = []
    request = m.ProxyTestRequest(
        proxy=m.ProxyConfig(http_proxy="http://127.0.0.1:9"), urls=["http://127.0.0.1:9/"]
    )
    asking = threading.Thread(
        target=lambda: outcome.append(client.send(Calls.test_proxy("n1", request, wait=20)))
    )
    asking.start()
    first = eventually(lambda: node.poll(wait=1).commands, timeout=10)  # this answer is "lost"
    again = eventually(lambda: node.poll(wait=5).commands, timeout=10)
    assert [c.id for c in again] == [c.id for c in first]
    result = m.ProxyTestResult(ok=False, reason="refused", message="refused")
    node.client.send(
        Calls.post_command_result(
            "n1", again[0].id, m.CommandResult(ok=True, result=msgspec.to_builtins(result))
        )
    )
    asking.join(timeout=20)
    assert [r.reason for r in outcome] == ["refused"]
    assert node.poll(wait=0).commands == []  # answered: no longer handed out


@pytest.fixture
def quick_reconcile(apiserver: ApiServerFactory) -> Iterator[tuple[Client, str]]:
    settings = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "60", "RUN_RECONCILE_GRACE": "1"}
    server = apiserver(settings)
    with Client(server.base_url) as api:
        yield api, server.base_url


def _beat_until(node: FakeNode, api: Client, run_id: str, status: str, timeout: float = 15.0) -> m.Run:
    """Heartbeats every half second (the node stays alive) until the run reaches `status`."""

    def check() -> m.Run | None:
        node.heartbeat()
        run = api.send(Calls.get_run(run_id))
        return run if run.status == status else None

    return eventually(check, timeout=timeout, interval=0.5)


def test_a_live_node_that_never_takes_a_run_gives_it_back(quick_reconcile: tuple[Client, str]) -> None:
    api, _ = quick_reconcile
    node = FakeNode(api, "n1")
    node.heartbeat()
    run = api.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))
    eventually(lambda: api.send(Calls.get_run(run.id)).status == "scheduled")
    # the node heartbeats but never polls its work: it does not hold the run, which goes back to
    # the queue (and, this being the only node, is placed on it again)

    def requeued() -> bool:
        node.heartbeat()
        return "requeued" in event_types(api, run.id)

    eventually(requeued, timeout=15, interval=0.5)  # a heartbeat every half second
    events = api.send(Calls.run_events(run.id)).items
    (event,) = [e for e in events if e.type == "requeued"]
    assert "it never claimed it" in event.data["reason"]
    assert [e.type for e in events].count("scheduled") >= 1
    assert api.send(Calls.get_node("n1")).running == (api.send(Calls.get_run(run.id)).status == "scheduled")


def test_a_claimed_run_the_node_stops_listing_is_lost_not_kept_running(
    quick_reconcile: tuple[Client, str],
) -> None:
    api, _ = quick_reconcile
    node = FakeNode(api, "n1")
    node.heartbeat()
    run = api.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))
    eventually(lambda: api.send(Calls.get_run(run.id)).status == "scheduled")
    node.start(run.id)
    assert node.heartbeat().stop_runs == []  # listed: all well
    node.held.clear()  # its container vanished; the node no longer lists it
    lost = _beat_until(node, api, run.id, "lost")
    assert "has not listed the run" in (lost.message or "")
    assert api.send(Calls.get_node("n1")).running == 0


def test_a_stale_attempt_is_told_to_stop(quick_reconcile: tuple[Client, str]) -> None:
    api, _ = quick_reconcile
    node = FakeNode(api, "n1")
    node.heartbeat()
    run = api.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))
    placed = eventually(lambda: (r := api.send(Calls.get_run(run.id))).status == "scheduled" and r)
    node.start(run.id)
    request = m.HeartbeatRequest(
        node_id="n1", active_runs=[run.id], run_attempts={run.id: placed.attempts - 1 or 99}
    )
    assert api.send(Calls.heartbeat(request)).stop_runs == [run.id]
    current = m.HeartbeatRequest(node_id="n1", active_runs=[run.id], run_attempts={run.id: placed.attempts})
    assert api.send(Calls.heartbeat(current)).stop_runs == []
