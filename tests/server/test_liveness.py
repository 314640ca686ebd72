"""Heartbeats off the database path (server.services.liveness), through real apiserver processes:
SQLite and PostgreSQL, the in-process and the Redis liveness store."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support import db
from tests.support.fake_node import FakeNode
from tests.support.server import ServerProcess
from tests.support.wait import eventually, wait_until

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=STORES)
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The liveness store: in the apiserver's memory, or Redis (REDIS_URL)."""
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_server").url}


def beat(client: httpx.Client, node_id: str, labels: dict[str, str] | None = None, **extra: Any) -> Any:
    body = {"node_id": node_id, "labels": labels or {"zone": "a"}, "capacity": {"max_concurrent": 2}, **extra}
    response = client.post("/api/v1/nodes/heartbeat", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def node(client: httpx.Client, node_id: str) -> Any:
    response = client.get(f"/api/v1/nodes/{node_id}")
    assert response.status_code == 200, response.text
    return response.json()


def listed(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/api/v1/nodes", params=params)
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def shown_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@contextmanager
def beating(base_url: str, node_id: str, every: float) -> Iterator[None]:
    """A node that keeps heartbeating every `every` seconds, through server restarts (errors ignored)."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=base_url, trust_env=False, timeout=2.0) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, AssertionError):  # down or starting: retried
                    beat(client, node_id)
                stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def watch(server: ServerProcess, node_ids: list[str], seconds: float) -> dict[str, set[str]]:
    """Every status each node was seen with, by GET and in the `status=offline` listing."""
    seen: dict[str, set[str]] = {node_id: set() for node_id in node_ids}
    deadline = time.monotonic() + seconds
    with server.client() as client:
        while time.monotonic() < deadline:
            for node_id in node_ids:
                seen[node_id].add(node(client, node_id)["status"])
            for node_id in listed(client, status="offline"):
                seen[node_id].add("offline")
            time.sleep(0.05)  # the polling step
    return seen


def test_a_restart_causes_no_false_offline(apiserver: ApiServerFactory, store_env: dict[str, str]) -> None:
    server = apiserver({**store_env, "NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "3"})
    with server.client() as client:
        beat(client, "gone")  # silent from now on: offline before the restart, and after it
    with beating(server.base_url, "alive", every=0.3):
        with server.client() as client:
            wait_status(client, "gone", "offline")
            wait_status(client, "alive", "online")
        time.sleep(2)  # elapsed time is the point: "gone" is offline well before the last stored times
        server.kill()  # a crash: what was not flushed yet is lost
        time.sleep(4)  # elapsed time is the point: down for longer than NODE_OFFLINE_AFTER
        server.start()
        seen = watch(server, ["alive", "gone"], seconds=4.5)  # past the first offline window
    assert seen == {"alive": {"online"}, "gone": {"offline"}}


def wait_status(client: httpx.Client, node_id: str, status: str, timeout: float = 15.0) -> None:
    wait_until(lambda: node(client, node_id)["status"] == status, f"{node_id} {status}", timeout)


def test_a_changed_report_is_listed_at_once(apiserver: ApiServerFactory, store_env: dict[str, str]) -> None:
    """Labels, capacity and condition states go to the database with the heartbeat that brings
    them, not with the batched liveness writes (here 30 s apart)."""
    server = apiserver({**store_env, "LIVENESS_FLUSH_INTERVAL": "30"})
    with server.client() as client:
        beat(client, "n1", {"zone": "a"})
        beat(client, "n1", {"zone": "a"})  # unchanged: liveness only
        beat(client, "n1", {"zone": "b"}, capacity={"max_concurrent": 5, "cpus": 2.0})
        shown = listed(client)["n1"]
        assert shown["labels"] == {"zone": "b"}
        assert shown["capacity"] == {"max_concurrent": 5, "cpus": 2.0, "memory_mb": None}
        failing = [{"type": "disk", "ok": False, "message": "full"}]
        beat(client, "n1", {"zone": "b"}, capacity={"max_concurrent": 5, "cpus": 2.0}, conditions=failing)
        shown = listed(client)["n1"]
        assert shown["schedulable"] is False
        assert [(c["type"], c["ok"]) for c in shown["conditions"]] == [("disk", False)]
        assert set(listed(client, selector="zone=b", status="online")) == {"n1"}


def test_liveness_reaches_the_database_within_the_flush_interval(
    apiserver: ApiServerFactory, store_env: dict[str, str], database_url: str
) -> None:
    server = apiserver({**store_env, "LIVENESS_FLUSH_INTERVAL": "1"})
    with server.client() as client:
        beat(client, "n1")
        stored_first = db.last_heartbeat_at(database_url, "n1")
        assert stored_first is not None  # the first heartbeat registers the node in the database
        beat(client, "n1")  # liveness only
        sent = time.monotonic()
        newest = shown_time(node(client, "n1")["last_heartbeat_at"])
        assert newest > stored_first

        def written() -> bool:
            stored = db.last_heartbeat_at(database_url, "n1")
            return stored is not None and abs(stored - newest) < timedelta(milliseconds=1)

        eventually(written, timeout=5.0, interval=0.05)
        assert time.monotonic() - sent < 1.0 + 1.0  # the flush interval, and slack for a busy machine


def test_a_node_that_stops_is_offline_after_offline_after(
    apiserver: ApiServerFactory, store_env: dict[str, str]
) -> None:
    server = apiserver({**store_env, "NODE_HEARTBEAT_INTERVAL": "0.5", "NODE_OFFLINE_AFTER": "2"})
    with server.client() as client:
        for _ in range(4):  # a node heartbeating: all but the first stay off the database path
            assert beat(client, "n1")["status"] == "online"
            time.sleep(0.3)  # elapsed time is the point: the heartbeat interval
        beat(client, "n1")
        last = time.monotonic()
        offline_at: dict[str, float] = {}
        while len(offline_at) < 2 and time.monotonic() - last < 10:
            if "get" not in offline_at and node(client, "n1")["status"] == "offline":
                offline_at["get"] = time.monotonic() - last
            if "listing" not in offline_at and "n1" in listed(client, status="offline"):
                offline_at["listing"] = time.monotonic() - last
            time.sleep(0.02)  # the polling step
    assert set(offline_at) == {"get", "listing"}
    for how, after in offline_at.items():
        assert 2.0 - 0.1 <= after <= 2.0 + 1.0, (how, after)


@pytest.mark.redis
def test_two_replicas_sharing_redis_agree_on_liveness(
    apiserver: ApiServerFactory, redis_server: Any, database_url: str
) -> None:
    env = {"REDIS_URL": redis_server.url, "LIVENESS_FLUSH_INTERVAL": "30"}
    first, second = apiserver(env), apiserver(env)
    with first.client() as one, second.client() as two:
        beat(one, "n1")
        beat(one, "n1")  # liveness only, in Redis; the database gets it within 30 s
        heard = shown_time(node(one, "n1")["last_heartbeat_at"])
        assert shown_time(node(two, "n1")["last_heartbeat_at"]) == heard
        stored = db.last_heartbeat_at(database_url, "n1")
        assert stored is not None
        assert stored < heard
        beat(two, "n1")  # taken by the other replica from the report the first one stored
        newer = shown_time(listed(one)["n1"]["last_heartbeat_at"])
        assert newer > heard
        assert shown_time(listed(two)["n1"]["last_heartbeat_at"]) == newer
        assert db.last_heartbeat_at(database_url, "n1") == stored  # still liveness only
        assert listed(one)["n1"]["status"] == listed(two)["n1"]["status"] == "online"


def test_a_run_the_server_ended_is_stopped_though_the_report_did_not_change(
    apiserver: ApiServerFactory, database_url: str
) -> None:
    """The server's side can change while a node's report stays the same: each batched write
    checks the runs of the nodes it wrote, and sends such a node's next heartbeat through
    reconciliation."""
    server = apiserver(
        {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "60", "LIVENESS_FLUSH_INTERVAL": "0.2"}
    )
    with Client(server.base_url) as api:
        node_ = FakeNode(api, "n1")
        node_.heartbeat()
        run = api.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))
        eventually(lambda: api.send(Calls.get_run(run.id)).status == "scheduled")
        node_.start(run.id)
        assert node_.heartbeat().stop_runs == []
        assert node_.heartbeat().stop_runs == []  # unchanged: liveness only
        db.set_run_status(database_url, run.id, "failed")  # ended by the server (a deadline, say)
        eventually(lambda: node_.heartbeat().stop_runs == [run.id], timeout=10, interval=0.3)


def test_the_fast_lane_answers_as_the_api_does(apiserver: ApiServerFactory) -> None:
    """An unchanged heartbeat is answered below Litestar (server.controllers.heartbeat_lane): the
    same body, headers, request id and request count as the one the full path answered."""
    server = apiserver({})
    with server.client() as client:
        answers = [client.post("/api/v1/nodes/heartbeat", json={"node_id": "n1"}) for _ in range(2)]
        metrics = client.get("/metrics").text
    first, second = answers  # the first registers the node (full path), the second is liveness only
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.headers["content-type"] == second.headers["content-type"] == "application/json"
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    counted = 'agentnodes_http_requests_total{code="200",method="POST",route="/api/v1/nodes/heartbeat"} 2.0'
    assert counted in metrics
    assert "agentnodes_heartbeats_total 2.0" in metrics


def test_the_fast_lane_leaves_refusals_to_the_api(apiserver: ApiServerFactory) -> None:
    """Whatever the lane does not take gets the API's own answer: a join token registers, a node
    token acting for another node is refused, a broken body is a 400."""
    server = apiserver({"ADMIN_TOKEN": "admin-token", "NODE_JOIN_TOKEN": "join-token"})
    url = "/api/v1/nodes/heartbeat"
    with server.client(token="join-token") as joining:
        token = joining.post(url, json={"node_id": "n1"}).json()["node_token"]
        joining.post(url, json={"node_id": "n2"}).raise_for_status()
    with server.client(token=token) as node_client:
        for _ in range(2):
            assert node_client.post(url, json={"node_id": "n1"}).status_code == 200
        assert node_client.post(url, json={"node_id": "n2"}).status_code == 403
        assert (
            node_client.post(url, content=b"{", headers={"content-type": "application/json"}).status_code
            == 400
        )
    with server.client(token="wrong") as stranger:
        assert stranger.post(url, json={"node_id": "n1"}).status_code == 401
