"""/metrics and the request log, through a real apiserver: the counts match the API's listing,
requests are counted by route template, a token is needed when tokens are set, and every log
line of a request is a JSON object carrying its request id."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, wait_run_status
from tests.support.server import ServerProcess
from tests.support.wait import eventually

ADMIN, VIEWER, JOIN = "admin-token-0123", "viewer-token-0123", "join-token-0123"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def server(apiserver: ApiServerFactory) -> ServerProcess:
    return apiserver({"NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60", "LOG_LEVEL": "DEBUG"})


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.base_url) as api:
        yield api


def test_metrics_count_what_the_api_lists(server: ServerProcess, client: Client) -> None:
    busy, idle, drained = (FakeNode(client, name, max_concurrent=1) for name in ("busy", "idle", "drained"))
    sick = FakeNode(client, "sick")
    sick.conditions = [m.ConditionReport(type="disk", ok=False, message="full")]
    for node in (busy, idle, drained, sick):
        node.heartbeat()
    client.send(Calls.patch_node("drained", m.NodePatch(status="draining")))
    runs = [client.send(Calls.create_run(m.RunCreate(image="x", command=["true"]))) for _ in range(4)]
    placed = [wait_run_status(client, run.id, "scheduled") for run in runs[:2]]
    owner = {"busy": busy, "idle": idle}
    first = owner[placed[0].node_id or ""]
    first.start(placed[0].id)
    first.report(placed[0].id, ("exited", {"exit_code": 0}))

    def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        scraped = samples(httpx.get(f"{server.base_url}/metrics").text)
        listed = {
            s: client.send(Calls.list_runs(status=s, limit=1)).total
            for s in ("queued", "scheduled", "succeeded")
        }
        if all(value(scraped, "agentnodes_runs", status=s) == n for s, n in listed.items()):
            return scraped
        return None

    scraped = eventually(settled, timeout=15)
    for status in ("online", "offline", "draining"):
        assert (
            value(scraped, "agentnodes_nodes", status=status)
            == client.send(Calls.list_nodes(status=status, limit=1)).total
        )
    assert value(scraped, "agentnodes_nodes", status="online") == 3  # sick is online, just held back
    assert value(scraped, "agentnodes_nodes_unschedulable") == 1
    assert value(scraped, "agentnodes_queue_depth") == client.send(Calls.list_runs(status="queued")).total
    assert value(scraped, "agentnodes_oldest_queued_run_age_seconds") > 0
    assert value(scraped, "agentnodes_heartbeats_total") >= 4
    assert value(scraped, "agentnodes_runs_placed_total") >= 2
    assert value(scraped, "agentnodes_placement_seconds_count") >= 1


def test_requests_are_counted_by_route_template(server: ServerProcess, client: Client) -> None:
    FakeNode(client, "n1").heartbeat()
    for _ in range(3):
        client.send(Calls.get_node("n1"))
    httpx.get(f"{server.base_url}/api/v1/nodes/nobody")
    httpx.get(f"{server.base_url}/no/such/path")
    scraped = samples(httpx.get(f"{server.base_url}/metrics").text)
    route = "/api/v1/nodes/{node_id}"
    assert value(scraped, "agentnodes_http_requests_total", method="GET", route=route, code="200") == 3
    assert value(scraped, "agentnodes_http_requests_total", method="GET", route=route, code="404") == 1
    assert value(scraped, "agentnodes_http_requests_total", method="GET", route="unmatched", code="404") == 1
    assert not any("nobody" in str(labels) for _, labels in scraped)  # ids never become labels


def test_metrics_need_a_reading_token_when_tokens_are_set(apiserver: ApiServerFactory) -> None:
    server = apiserver({"ADMIN_TOKEN": ADMIN, "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN})
    url = f"{server.base_url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {JOIN}"}).status_code == 403
    viewer = httpx.get(url, headers={"Authorization": f"Bearer {VIEWER}"})
    assert viewer.status_code == 200
    assert viewer.headers["content-type"].startswith("text/plain")
    assert "agentnodes_nodes" in viewer.text


def test_each_log_line_is_json_and_carries_its_request_id(server: ServerProcess, client: Client) -> None:
    FakeNode(client, "n1").heartbeat()
    answer = httpx.get(f"{server.base_url}/api/v1/nodes/n1", headers={"X-Request-Id": "trace-0042"})
    assert answer.headers["x-request-id"] == "trace-0042"
    generated = httpx.get(f"{server.base_url}/api/v1/nodes/n1").headers["x-request-id"]
    assert generated
    assert generated != "trace-0042"

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in server.log().splitlines() if line.strip()]

    mine = eventually(
        lambda: [line for line in lines() if line.get("request_id") == "trace-0042"] or None, timeout=5
    )
    assert any(line["logger"] == "server.access" and "200" in str(line["event"]) for line in mine)
    assert all({"timestamp", "level", "logger", "event"} <= set(line) for line in lines())
