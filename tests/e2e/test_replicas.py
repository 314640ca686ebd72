"""Two apiserver replicas on one PostgreSQL and one Redis, as operators run them: a long-poll on
one wakes within 100 ms for a run placed through the other, one replica leads the fleet-wide
checks, and when the leader is killed the other takes over without any node flapping; the live
node stream of one hears the changes made through the other."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.support.fake_node import FakeNode
from tests.support.longpoll import BackgroundPoll
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse import Stream
from tests.support.wait import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LEASE = 3.0


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[list[ServerProcess]]:
    env = {
        "DATABASE_URL": postgres_server.create_database(),
        "REDIS_URL": redis_server.url,
        "NODE_HEARTBEAT_INTERVAL": "1",
        "NODE_OFFLINE_AFTER": "4",
        "RUN_LOST_GRACE": "1",
        "LEADER_LEASE_SECONDS": str(LEASE),
    }
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(ServerProcess(env=env, data_dir=tmp_path / name).start())
        yield started
    finally:
        for server in started:
            server.stop()


def leads(server: ServerProcess) -> bool:
    try:
        text = httpx.get(f"{server.base_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return False
    return any(
        sample.name == "agentnodes_leader" and sample.value == 1
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def test_a_long_poll_on_one_replica_wakes_for_a_run_placed_through_the_other(
    replicas: list[ServerProcess],
) -> None:
    a, b = replicas
    with Client(a.base_url) as on_a, Client(b.base_url) as on_b:
        node = FakeNode(on_a, "waiter")
        node.heartbeat()
        latencies = []
        for _ in range(5):
            poll = BackgroundPoll(a, "/api/v1/nodes/waiter/work?wait=20").start().wait_received()
            submitted = time.monotonic()
            run = on_b.send(Calls.create_run(m.RunCreate(image="x", command=["true"])))
            work = msgspec.convert(poll.join(timeout=20).json(), m.WorkResponse)
            assert poll.answered_at is not None
            assert [assignment.run.id for assignment in work.assignments] == [run.id]
            latencies.append(poll.answered_at - submitted)
            node.start(run.id)
            node.report(run.id, ("exited", {"exit_code": 0}))
        # submit, place (either replica), wake replica A through Redis, answer: well under the 5 s re-read
        assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies

        # both replicas' /metrics count what the API lists
        def counted(server: ServerProcess, name: str, status: str) -> float:
            text = httpx.get(f"{server.base_url}/metrics").text
            return next(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == name and sample.labels.get("status") == status
            )

        succeeded = on_a.send(Calls.list_runs(status="succeeded", limit=1)).total
        assert succeeded == 5
        for server in (a, b):
            eventually(lambda s=server: counted(s, "agentnodes_runs", "succeeded") == succeeded, timeout=10)
            assert (
                counted(server, "agentnodes_nodes", "online")
                == on_b.send(Calls.list_nodes(status="online")).total
            )


def test_the_leader_killed_hands_over_and_no_node_flaps(replicas: list[ServerProcess]) -> None:
    a, b = replicas
    leader, follower = (a, b) if eventually(lambda: leads(a) or leads(b), timeout=10) and leads(a) else (b, a)
    assert not leads(follower)
    with Client(follower.base_url) as api:
        steady = FakeNode(api, "steady")
        doomed = FakeNode(api, "doomed")
        steady.heartbeat()
        doomed.heartbeat()
        run = api.send(Calls.create_run(m.RunCreate(image="x", command=["sleep", "60"])))
        eventually(lambda: api.send(Calls.get_run(run.id)).status == "scheduled", timeout=10)
        owner = steady if api.send(Calls.get_run(run.id)).node_id == "steady" else doomed
        owner.start(run.id)

        seen: set[str] = set()
        stop = threading.Event()

        def keep_steady_alive() -> None:
            while not stop.is_set():
                steady.heartbeat()
                seen.add(api.send(Calls.get_node("steady")).status)
                stop.wait(0.3)

        beating = threading.Thread(target=keep_steady_alive)
        beating.start()
        try:
            leader.kill()  # in the middle of whatever check it was running
            killed_at = time.monotonic()
            eventually(lambda: leads(follower), timeout=LEASE * 3)
            took_over = time.monotonic() - killed_at
            if owner is doomed:  # the new leader reaps the silent node's run: it acts, not just holds
                eventually(lambda: api.send(Calls.get_run(run.id)).status == "lost", timeout=20)
            else:
                time.sleep(LEASE)  # a steady node's run must survive the hand-over: time is the point
                assert api.send(Calls.get_run(run.id)).status == "running"
        finally:
            stop.set()
            beating.join(timeout=5)
    assert took_over <= LEASE + 2
    assert seen == {"online"}, "the node that kept its heartbeats flapped"


def test_the_live_node_stream_of_one_replica_hears_changes_made_through_the_other(
    replicas: list[ServerProcess],
) -> None:
    a, b = replicas
    stream = Stream(f"{b.base_url}/api/v1/watch/nodes")
    try:
        stream.next("hello")
        with Client(a.base_url) as on_a:
            FakeNode(on_a, "streamed").heartbeat()
            assert stream.next("node")["data"]["id"] == "streamed"
            on_a.send(Calls.patch_node("streamed", m.NodePatch(status="draining")))
            stream.until("streamed", {"draining": True})
            on_a.send(Calls.delete_node("streamed"))
            assert stream.next("deleted")["data"] == {"id": "streamed"}
    finally:
        stream.close()
    # a stream that moves to the other replica cannot resume there: it is told to resync
    last = stream.events[-1]["id"]
    moved = Stream(f"{a.base_url}/api/v1/watch/nodes", {"Last-Event-ID": last})
    try:
        moved.next("hello")
        assert moved.next()["event"] == "resync"
    finally:
        moved.close()
