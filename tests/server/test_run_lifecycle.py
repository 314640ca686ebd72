"""Run lifecycle through a real apiserver: lost nodes and re-queueing, a Redis outage,
the work long-poll's wake-up (in-process queue and Redis) and the proxy-test command round trip."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from nodeapi import errors
from nodeapi import models as m
from nodeapi.client import Calls, Client
from server.services.work import WORK_RECHECK_SINGLE
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, event_types, wait_run_status
from tests.support.longpoll import BackgroundPoll
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.wait import eventually

POLL_WAIT = 15.0
FAST_LIVENESS = {"NODE_HEARTBEAT_INTERVAL": "0.3", "NODE_OFFLINE_AFTER": "1", "RUN_LOST_GRACE": "0.5"}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def queue_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    redis: RedisServer = request.getfixturevalue("redis_server")
    return {"REDIS_URL": redis.url}


def submit(api: Client, **kwargs: object) -> m.Run:
    return api.send(Calls.create_run(m.RunCreate(image="busybox", command=["true"], **kwargs)))  # type: ignore[arg-type]


@pytest.mark.slow
def test_silent_node_loses_running_runs_and_requeues_unstarted_ones(apiserver: ApiServerFactory) -> None:
    server = apiserver({**FAST_LIVENESS, "RUN_MAX_ATTEMPTS": "2"})
    with Client(server.base_url) as api:
        first = FakeNode(api, "node-a", {"pool": "p"}, max_concurrent=3)
        first.heartbeat()
        running, claimed, unclaimed = (submit(api, node_selector={"pool": "p"}) for _ in range(3))
        for run in (running, claimed, unclaimed):
            wait_run_status(api, run.id, "scheduled")
        first.start(running.id)
        first.report(claimed.id, ("claimed", {}))

        # node-a goes silent: past NODE_OFFLINE_AFTER + RUN_LOST_GRACE its runs are handled
        lost = wait_run_status(api, running.id, "lost", timeout=15)
        assert "node-a" in (lost.message or "")
        assert lost.finished_at is not None
        # claimed: it may have started without the server hearing of it, so it is never placed
        # again (it could run twice at once); only the never-claimed run goes back to the queue
        maybe_started = wait_run_status(api, claimed.id, "lost", timeout=5)
        assert "may have started it" in (maybe_started.message or "")
        requeued = wait_run_status(api, unclaimed.id, "queued", timeout=5)
        assert requeued.node_id is None
        assert requeued.attempts == 1
        assert "requeued" in event_types(api, unclaimed.id)
        assert api.send(Calls.get_node("node-a")).running == 0
        # back from the dead, it is told to stop what it still runs
        assert first.heartbeat([running.id, claimed.id]).stop_runs == sorted([running.id, claimed.id])
        first.labels = {"pool": "retired"}
        first.heartbeat()

        second = FakeNode(api, "node-b", {"pool": "p"}, max_concurrent=3)
        second.heartbeat()
        assert wait_run_status(api, unclaimed.id, "scheduled").node_id == "node-b"
        # node-b goes silent too: second attempt used up, so the run is lost for good
        gone = wait_run_status(api, unclaimed.id, "lost", timeout=15)
        assert "giving up after 2 attempt(s)" in (gone.message or "")
        assert api.send(Calls.get_node("node-b")).running == 0


def test_server_restart_gives_nodes_a_full_grace_before_reaping(apiserver: ApiServerFactory) -> None:
    liveness = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "3", "RUN_LOST_GRACE": "1"}
    server = apiserver(liveness)
    with Client(server.base_url) as api:
        node = FakeNode(api, "node-a")
        node.heartbeat()
        run = submit(api)
        wait_run_status(api, run.id, "scheduled")
        node.start(run.id)

        server.stop()
        # elapsed time is the point: down longer than NODE_OFFLINE_AFTER + RUN_LOST_GRACE, so the
        # node's last heartbeat is stale when the server comes back
        time.sleep(4.5)
        server.start()

        # heartbeats were missing only because the server was down: the node gets its full grace
        assert node.heartbeat([run.id]).stop_runs == []
        assert api.send(Calls.get_run(run.id)).status == "running"
        assert "lost" not in event_types(api, run.id)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_outage_gives_nodes_a_full_grace_before_reaping(tmp_path: Path) -> None:
    """Regression: heartbeats refused while the database was down (503) left the nodes' last
    heartbeat stale, and the reaper's first pass after the outage declared a healthy node's runs
    lost before the node's next heartbeat could arrive."""
    liveness = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "3", "RUN_LOST_GRACE": "1"}
    with PostgresServer() as postgres:
        env = {**liveness, "DATABASE_URL": postgres.create_database()}
        with ServerProcess(env=env, data_dir=tmp_path) as server, Client(server.base_url) as api:
            node = FakeNode(api, "node-a")
            node.heartbeat()
            run = submit(api)
            wait_run_status(api, run.id, "scheduled")
            node.start(run.id)

            postgres.shutdown()
            time.sleep(5.0)  # down longer than NODE_OFFLINE_AFTER + RUN_LOST_GRACE: the heartbeat is stale
            postgres.restart()
            eventually(lambda: api.send(Calls.get_run(run.id)), timeout=15)  # the database answers

            # the node's heartbeats were refused, not missed: it gets a full grace from now (4 s)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                assert api.send(Calls.get_run(run.id)).status == "running"
                time.sleep(0.2)
            assert node.heartbeat([run.id]).stop_runs == []
            assert api.send(Calls.get_run(run.id)).status == "running"
            assert "lost" not in event_types(api, run.id)
            assert "the database answers again" in server.log()


@pytest.mark.redis
@pytest.mark.slow
def test_runs_created_while_redis_is_down_are_all_scheduled(
    apiserver: ApiServerFactory, redis_server: RedisServer
) -> None:
    server = apiserver(
        {"REDIS_URL": redis_server.url, "NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"}
    )
    with Client(server.base_url) as api:
        node = FakeNode(api, "node-r", max_concurrent=20)
        node.heartbeat()
        before = submit(api)
        wait_run_status(api, before.id, "scheduled")

        redis_server.stop()
        created = [submit(api) for _ in range(5)]  # 201 although the queue is unreachable
        assert all(run.status == "queued" for run in created)
        redis_server.start()

        for run in created:
            assert wait_run_status(api, run.id, "scheduled", timeout=30).node_id == "node-r"
        assert api.send(Calls.get_node("node-r")).running == 6


def test_assignment_wakes_a_waiting_work_poll(apiserver: ApiServerFactory, queue_env: dict[str, str]) -> None:
    server = apiserver({**queue_env, "NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api, Client(server.base_url) as node_api:
        node = FakeNode(node_api, "node-w")
        node.heartbeat()
        assert node.poll().assignments == []
        poll = BackgroundPoll(server, f"/api/v1/nodes/node-w/work?wait={POLL_WAIT:g}").start()
        poll.wait_received()
        submitted_at = time.monotonic()
        run = submit(api)
        response = poll.join(timeout=POLL_WAIT + 5)
        assert response.status_code == 200, response.text
        work = msgspec.json.decode(response.content, type=m.WorkResponse)
        assert [a.run.id for a in work.assignments] == [run.id]
        # woken by the assignment: without the wake-up it would answer at its next re-read of the
        # database (every WORK_RECHECK_SINGLE s on the in-process queue; with Redis, every
        # WORK_RECHECK_REPLICATED s, as a replica's assignment arrives) or at the end of its wait.
        # How fast it wakes is measured by bench/node_channel.py.
        assert poll.answered_at is not None
        assert poll.answered_at - submitted_at < (POLL_WAIT if queue_env else WORK_RECHECK_SINGLE)
        env_config = work.assignments[0].env_config
        assert (env_config.proxy, env_config.env) == (m.ProxyConfig(), {})  # none saved

        # assignments not started yet are handed out again (a restarted node must not lose them)
        again = node.poll(wait=5)
        assert [a.run.id for a in again.assignments] == [run.id]
        node.start(run.id)
        started = time.monotonic()
        assert node.poll(wait=0.5).assignments == []
        assert time.monotonic() - started >= 0.4  # nothing new: it waited


def test_sigterm_answers_open_long_polls_and_stops_promptly(apiserver: ApiServerFactory) -> None:
    server = apiserver()
    with Client(server.base_url) as api:
        FakeNode(api, "node-a").heartbeat()
        run = submit(api, node_selector={"pool": "nowhere"})
        eventually(lambda: "unschedulable" in event_types(api, run.id))
        last = api.send(Calls.run_events(run.id)).items[-1].seq
        polls = {
            "work": "/api/v1/nodes/node-a/work?wait=30",
            "events": f"/api/v1/runs/{run.id}/events?after={last}&wait=30",
        }

        waiting = {name: BackgroundPoll(server, path).start() for name, path in polls.items()}
        for poll in waiting.values():
            poll.wait_received()
        assert not [name for name, poll in waiting.items() if poll.response is not None]
        stopping = time.monotonic()
        server.stop(timeout=15)
        stopped_after = time.monotonic() - stopping
        answers = {name: poll.join(timeout=20).status_code for name, poll in waiting.items()}

    assert stopped_after < 3.0
    assert answers == {"work": 200, "events": 200}  # answered, not cut off


@pytest.fixture
def proxy_server(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver({**FAST_LIVENESS, "PROXY_TEST_URL": "http://127.0.0.1:9/"})
    with Client(server.base_url) as api:
        yield api


def test_proxy_test_round_trip_through_a_node(proxy_server: Client) -> None:
    api = proxy_server
    node = FakeNode(api, "node-p")
    node.heartbeat()
    api.send(
        Calls.put_env_config(
            "node-p",
            m.EnvConfig(proxy=m.ProxyConfig(http_proxy="http://127.0.0.1:3128", no_proxy="localhost")),
        )
    )
    seen: list[m.NodeCommand] = []

    def answer() -> None:
        work = node.poll(wait=10)
        seen.extend(work.commands)
        for command in work.commands:
            result = m.ProxyTestResult(ok=False, reason="refused", message="proxy refused the connection")
            body = m.CommandResult(ok=True, result=msgspec.to_builtins(result))
            api.send(Calls.post_command_result("node-p", command.id, body))
            api.send(Calls.post_command_result("node-p", command.id, body))  # a retry changes nothing

    answering = threading.Thread(target=answer)
    answering.start()
    node.heartbeat()
    result = api.send(Calls.test_proxy("node-p", None, wait=10))
    answering.join(timeout=15)
    assert result.ok is False
    assert result.reason == "refused"
    assert result.node_id == "node-p"
    assert result.tested_at is not None
    assert len(seen) == 1
    assert seen[0].type == "test_proxy"
    payload = seen[0].payload
    assert payload["proxy"]["http_proxy"] == "http://127.0.0.1:3128"  # the saved config by default
    assert payload["url"] == "http://127.0.0.1:9/"  # PROXY_TEST_URL
    saved = api.send(Calls.get_node("node-p")).last_proxy_test
    assert saved is not None
    assert saved.reason == "refused"


def test_proxy_test_errors(proxy_server: Client) -> None:
    api = proxy_server
    node = FakeNode(api, "node-q")
    node.heartbeat()
    with pytest.raises(errors.BadRequest, match="scheme"):
        api.send(Calls.test_proxy("node-q", m.ProxyTestRequest(proxy=m.ProxyConfig(http_proxy="ftp://x:1"))))
    started = time.monotonic()
    with pytest.raises(errors.GatewayTimeout, match="node node-q did not answer the proxy test within 1 s"):
        api.send(Calls.test_proxy("node-q", m.ProxyTestRequest(url="http://127.0.0.1:9/"), wait=1))
    assert time.monotonic() - started < 5
    with pytest.raises(errors.NotFound):
        api.send(Calls.test_proxy("no-such-node", wait=1))
    eventually(lambda: api.send(Calls.get_node("node-q")).status == "offline", timeout=5)
    with pytest.raises(errors.Conflict, match=r"node node-q is offline: last heartbeat \d+ s ago"):
        api.send(Calls.test_proxy("node-q", wait=1))
    # the expired command is not handed out any more
    assert node.poll().commands == []
