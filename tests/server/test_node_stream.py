"""The live node stream: the node feed in-process (its ring, resuming, slow streams, replicas over
Redis), the time sweep and its queries (SQLite and PostgreSQL), and GET /api/v1/watch/nodes
against a real apiserver process (AsyncTestClient reads a streamed answer to its end, so it
cannot test a stream)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from nodeapi import models as m
from nodeapi.client import Calls, Client
from server.db.models import NODES
from server.repositories import nodes as node_repo
from server.services.node_feed import FeedEvent, NodeFeed, TimeSweep
from server.wake.redis import RedisWakeBus
from tests.support.redis import RedisServer
from tests.support.scheduler_db import insert_rows, node_row
from tests.support.server import ServerProcess
from tests.support.sse import Stream

pytestmark = pytest.mark.timeout(60)


async def read_all(ids: Sequence[str]) -> dict[str, object]:
    return {node_id: {"id": node_id} for node_id in ids if not node_id.startswith("gone")}


async def next_event(events: AsyncIterator[FeedEvent], seconds: float = 2.0) -> FeedEvent:
    return await asyncio.wait_for(anext(events), seconds)


async def test_a_stream_says_hello_then_each_changed_node_once_in_order() -> None:
    feed = NodeFeed()
    events = feed.follow(read_all)
    hello = await next_event(events)
    assert hello.kind == "hello"
    assert hello.event_id == f"{feed.epoch}:0"
    for node_id in ("a", "b", "a", "gone-c"):
        feed.changed(node_id)
    got = [await next_event(events) for _ in range(3)]
    # a changed twice is sent once, at its last change
    assert [(e.kind, e.node_id, e.event_id) for e in got] == [
        ("node", "b", f"{feed.epoch}:2"),
        ("node", "a", f"{feed.epoch}:3"),
        ("deleted", "gone-c", f"{feed.epoch}:4"),
    ]
    assert got[0].data == {"id": "b"}
    assert feed.streams == 1
    await events.aclose()  # type: ignore[attr-defined]
    assert feed.streams == 0


async def test_a_reconnect_resumes_after_its_last_event_or_is_told_to_resync() -> None:
    feed = NodeFeed()
    for node_id in ("a", "b", "c"):
        feed.changed(node_id)
    resumed = feed.follow(read_all, last_event_id=f"{feed.epoch}:1")
    assert (await next_event(resumed)).kind == "hello"
    assert [(await next_event(resumed)).node_id for _ in range(2)] == ["b", "c"]
    for stale in ("another-epoch:1", f"{feed.epoch}:99", f"{feed.epoch}:x", "junk"):
        events = feed.follow(read_all, last_event_id=stale)
        assert [(await next_event(events)).kind for _ in range(2)] == ["hello", "resync"], stale


async def test_a_stream_that_falls_behind_the_ring_is_told_to_resync_and_ends() -> None:
    feed = NodeFeed(capacity=4)
    events = feed.follow(read_all)
    assert (await next_event(events)).kind == "hello"
    for i in range(10):  # the client reads nothing meanwhile: nothing is queued for it
        feed.changed(f"n{i}")
    assert (await next_event(events)).kind == "resync"
    with pytest.raises(StopAsyncIteration):
        await next_event(events)
    assert feed.streams == 0


async def test_a_reset_resyncs_streams_and_close_ends_them() -> None:
    feed = NodeFeed()
    events = feed.follow(read_all)
    assert (await next_event(events)).kind == "hello"
    waiting = asyncio.create_task(next_event(events))
    await asyncio.sleep(0.05)
    feed.reset()  # the wake bus reconnected: changes may have been missed
    assert (await waiting).kind == "resync"
    other = feed.follow(read_all)
    assert (await next_event(other)).kind == "hello"
    waiting = asyncio.create_task(next_event(other))
    await asyncio.sleep(0.05)
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await waiting


async def test_an_idle_stream_is_kept_alive() -> None:
    feed = NodeFeed()
    events = feed.follow(read_all, keepalive=0.05)
    assert (await next_event(events)).kind == "hello"
    assert (await next_event(events)).kind == "ping"


async def test_a_change_on_one_replica_reaches_the_streams_of_another(redis_server: RedisServer) -> None:
    bus_a, bus_b = RedisWakeBus(redis_server.url, "test:feed"), RedisWakeBus(redis_server.url, "test:feed")
    try:
        for bus in (bus_a, bus_b):
            await bus.start()
            await asyncio.wait_for(bus.subscribed.wait(), 5)
        feed_a, feed_b = NodeFeed(bus_a), NodeFeed(bus_b)
        events = feed_b.follow(read_all)
        assert (await next_event(events)).kind == "hello"
        started = time.monotonic()
        feed_a.changed("n1")
        event = await next_event(events)
        assert (event.kind, event.node_id) == ("node", "n1")
        assert time.monotonic() - started < 1.0
    finally:
        await bus_a.close()
        await bus_b.close()


async def test_the_time_sweep_reads_each_moment_once_and_only_for_open_streams() -> None:
    feed = NodeFeed()
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    windows: list[tuple[datetime, datetime]] = []

    async def turned_between(start: datetime, end: datetime) -> list[str]:
        windows.append((start, end))
        return ["t1"]

    sweep = TimeSweep(feed, turned_between, lambda: clock[0])
    assert await sweep.sweep_once() == []  # the first sweep only marks where it starts
    clock[0] += timedelta(seconds=1)
    assert await sweep.sweep_once() == []  # no stream open: nothing read
    events = feed.follow(read_all)
    assert (await next_event(events)).kind == "hello"
    for _ in range(2):
        clock[0] += timedelta(seconds=1)
        assert await sweep.sweep_once() == ["t1"]
    # contiguous windows, none read twice
    assert windows == [
        (clock[0] - timedelta(seconds=2), clock[0] - timedelta(seconds=1)),
        (clock[0] - timedelta(seconds=1), clock[0]),
    ]
    event = await next_event(events)
    assert (event.kind, event.node_id) == ("node", "t1")


async def test_the_sweep_queries_find_heartbeats_and_quarantines_in_their_window(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    rows = []
    for name, heard, until in (
        ("before", 10.0, 10.0),
        ("inside", 4.0, 4.0),
        ("edge", 5.0, 5.0),  # the window's start is in it, its end is not
        ("after", 1.0, 1.0),
    ):
        rows.append(
            {
                **node_row(name),
                "last_heartbeat_at": now - timedelta(seconds=heard),
                "quarantined_until": now - timedelta(seconds=until),
            }
        )
    rows.append({**node_row("never"), "last_heartbeat_at": None, "quarantined_until": None})
    await insert_rows(engine, NODES, rows)
    start, end = now - timedelta(seconds=5), now - timedelta(seconds=2)
    async with AsyncSession(engine) as session:
        assert sorted(await node_repo.heartbeats_between(session, start, end)) == ["edge", "inside"]
        assert sorted(await node_repo.quarantines_ending_between(session, start, end)) == ["edge", "inside"]


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # nodes go offline 2 s after their last heartbeat
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "2"}
    with ServerProcess(env=env) as process:
        yield process


def heartbeat(client: Client, node_id: str, labels: dict[str, str] | None = None) -> None:
    client.send(Calls.heartbeat(m.HeartbeatRequest(node_id=node_id, labels=labels or {"os": "linux"})))


def test_the_stream_sends_registrations_changes_offline_and_deletions(server: ServerProcess) -> None:
    stream = Stream(f"{server.base_url}/api/v1/watch/nodes")
    try:
        assert stream.status == 200
        hello = stream.next("hello")
        assert hello["retry"] == "2000"
        with Client(server.base_url) as api:
            heartbeat(api, "stream-a", {"os": "linux"})
            event = stream.next("node")
            assert event["data"]["id"] == "stream-a"
            assert event["data"]["status"] == "online"
            assert event["data"]["schedulable"] is True

            api.send(Calls.patch_node("stream-a", m.NodePatch(status="draining", labels={"team": "x"})))
            event = stream.until("stream-a", {"draining": True})
            assert event["data"]["labels"] == {"os": "linux", "team": "x"}
            api.send(Calls.patch_node("stream-a", m.NodePatch(status="online")))
            stream.until("stream-a", {"draining": False})

            # a run placed there: its load
            heartbeat(api, "stream-a", {"os": "linux"})  # online for 2 s more
            run = api.send(Calls.create_run(m.RunCreate(image="busybox", node_selector={"os": "linux"})))
            stream.until("stream-a", {"running": 1})
            api.send(Calls.cancel_run(run.id))  # it never started: the slot is free again
            stream.until("stream-a", {"running": 0})

            # no more heartbeats: the sweep says so once NODE_OFFLINE_AFTER has passed
            stream.until("stream-a", {"status": "offline"})

            api.send(Calls.delete_node("stream-a"))
            assert stream.next("deleted")["data"] == {"id": "stream-a"}
    finally:
        stream.close()


def test_a_reconnect_with_last_event_id_or_a_list_position_gets_what_it_missed(server: ServerProcess) -> None:
    first = Stream(f"{server.base_url}/api/v1/watch/nodes")
    with Client(server.base_url) as api:
        heartbeat(api, "resume-a")
        last = first.next("node")["id"]
        first.close()
        heartbeat(api, "resume-b")  # while no stream is open
        again = Stream(f"{server.base_url}/api/v1/watch/nodes", {"Last-Event-ID": last})
        try:
            assert again.next("hello")
            assert again.next("node")["data"]["id"] == "resume-b"
        finally:
            again.close()
    # list, then watch from the list's position: a change made in between is not missed
    with Client(server.base_url) as api:
        position = api.send(Calls.list_nodes(limit=1)).stream_position
        assert position
        heartbeat(api, "resume-c")
    since = Stream(f"{server.base_url}/api/v1/watch/nodes?since={position}")
    try:
        since.next("hello")
        assert since.next("node")["data"]["id"] == "resume-c"
    finally:
        since.close()
    stale = Stream(f"{server.base_url}/api/v1/watch/nodes", {"Last-Event-ID": "not-this-server:3"})
    try:
        stale.next("hello")
        assert stale.next()["event"] == "resync"
    finally:
        stale.close()


def test_with_tokens_the_stream_needs_a_reading_token() -> None:
    env = {"ADMIN_TOKEN": "stream-admin", "VIEWER_TOKEN": "stream-viewer", "NODE_JOIN_TOKEN": "stream-join"}
    with ServerProcess(env=env) as server:
        url = f"{server.base_url}/api/v1/watch/nodes"
        assert httpx.get(url, trust_env=False).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, trust_env=False)
        assert wrong.status_code == 401
        join = httpx.get(url, headers={"Authorization": "Bearer stream-join"}, trust_env=False)
        assert join.status_code == 403
        for token in ("stream-viewer", "stream-admin"):
            stream = Stream(url, {"Authorization": f"Bearer {token}"})
            try:
                assert stream.status == 200
                assert stream.next("hello")
            finally:
                stream.close()
        assert "stream-viewer" not in server.log()
