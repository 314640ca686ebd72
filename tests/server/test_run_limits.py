"""Run limits on the server (through a real apiserver process and scripted nodes): defaults and
ceilings of the create body, placement that fits CPU and memory, the reason every terminal run
carries, and the deadline the server enforces when a node does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodeapi import errors
from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, wait_run_status
from tests.support.wait import eventually

LIMITS = {
    "NODE_HEARTBEAT_INTERVAL": "5",
    "NODE_OFFLINE_AFTER": "60",
    "RUN_DEFAULT_DEADLINE": "3600",
    "RUN_MAX_DEADLINE": "7200",
    "RUN_DEFAULT_MEMORY_MB": "256",
    "RUN_DEFAULT_PIDS_LIMIT": "512",
    "RUN_MAX_PIDS_LIMIT": "4096",
    "RUN_DEADLINE_GRACE": "1",
}


@pytest.fixture
def client(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver(LIMITS)
    with Client(server.base_url) as api:
        yield api


def submit(api: Client, **fields: object) -> m.Run:
    return api.send(Calls.create_run(m.RunCreate(image="x", command=["true"], **fields)))  # type: ignore[arg-type]


class SizedNode(FakeNode):
    """A scripted node that reports allocatable CPUs and memory."""

    def __init__(
        self, client: Client, node_id: str, cpus: float, memory_mb: int, max_concurrent: int = 8
    ) -> None:
        super().__init__(client, node_id, max_concurrent=max_concurrent)
        self.cpus, self.memory_mb = cpus, memory_mb

    def heartbeat(self, active_runs: list[str] | None = None) -> m.HeartbeatResponse:
        request = m.HeartbeatRequest(
            node_id=self.node_id,
            capacity=m.Capacity(max_concurrent=self.max_concurrent, cpus=self.cpus, memory_mb=self.memory_mb),
            active_runs=sorted(self.held) if active_runs is None else active_runs,
        )
        return self.client.send(Calls.heartbeat(request))


def test_defaults_fill_what_the_body_leaves_out_and_ceilings_refuse(client: Client) -> None:
    plain = submit(client)
    assert plain.deadline_seconds == 3600
    assert plain.resources == m.Resources(cpus=None, memory_mb=256)
    assert plain.sandbox == m.Sandbox(read_only_rootfs=False, network="node", pids_limit=512)

    asked = submit(
        client,
        deadline_seconds=60,
        resources=m.Resources(cpus=0.0004, memory_mb=1024),
        sandbox=m.Sandbox(read_only_rootfs=True, network="none", pids_limit=64),
    )
    assert asked.deadline_seconds == 60
    assert asked.resources == m.Resources(cpus=0.001, memory_mb=1024)  # a thousandth at the least
    assert asked.sandbox == m.Sandbox(read_only_rootfs=True, network="none", pids_limit=64)
    assert client.send(Calls.get_run(asked.id)).sandbox.network == "none"

    with pytest.raises(errors.BadRequest, match=r"deadline_seconds: at most 7200 \(RUN_MAX_DEADLINE\)"):
        submit(client, deadline_seconds=7201)
    with pytest.raises(errors.BadRequest, match=r"pids_limit: at most 4096 \(RUN_MAX_PIDS_LIMIT\)"):
        submit(client, sandbox=m.Sandbox(pids_limit=5000))
    with pytest.raises(errors.BadRequest, match="cpus"):
        client.send(Calls.create_run(m.RunCreate(image="x", resources=m.Resources(cpus=-1))))
    assert client.send(Calls.list_runs()).total == 2  # refused bodies stored nothing


def test_runs_wait_for_memory_and_start_once_it_frees(client: Client) -> None:
    node = SizedNode(client, "n1", cpus=4, memory_mb=4096)
    node.heartbeat()
    big = [submit(client, resources=m.Resources(memory_mb=2048)) for _ in range(3)]
    first, second = (wait_run_status(client, run.id, "scheduled") for run in big[:2])
    assert {first.node_id, second.node_id} == {"n1"}

    def waiting_reason() -> str | None:
        run = client.send(Calls.get_run(big[2].id))
        return run.message if run.status == "queued" and run.message else None

    assert eventually(waiting_reason, timeout=10) == "0/1 nodes available: 1 insufficient memory"
    listed = client.send(Calls.get_node("n1"))
    assert listed.capacity == m.Capacity(max_concurrent=8, cpus=4.0, memory_mb=4096)
    assert listed.requested == m.ResourceUsage(cpus=0.0, memory_mb=4096)

    node.start(big[0].id)
    node.report(big[0].id, ("exited", {"exit_code": 0}))
    assert wait_run_status(client, big[2].id, "scheduled").node_id == "n1"


def test_an_admin_override_of_allocatable_resources_outlasts_heartbeats(client: Client) -> None:
    node = SizedNode(client, "n1", cpus=16, memory_mb=65536)
    node.heartbeat()
    client.send(Calls.patch_node("n1", m.NodePatch(cpus=2.5, memory_mb=8192)))
    node.heartbeat()
    assert client.send(Calls.get_node("n1")).capacity == m.Capacity(
        max_concurrent=8, cpus=2.5, memory_mb=8192
    )
    run = submit(client, resources=m.Resources(cpus=3))
    assert eventually(lambda: client.send(Calls.get_run(run.id)).message, timeout=10) == (
        "0/1 nodes available: 1 insufficient cpu"
    )


@pytest.mark.parametrize(
    ("events", "status", "reason"),
    [
        ([("started", {}), ("exited", {"exit_code": 0})], "succeeded", "succeeded"),
        ([("started", {}), ("exited", {"exit_code": 3})], "failed", "exit_nonzero"),
        ([("started", {}), ("exited", {"exit_code": 137, "oom_killed": True})], "failed", "oom_killed"),
        (
            [("started", {}), ("exited", {"exit_code": 143, "deadline_exceeded": True})],
            "failed",
            "deadline_exceeded",
        ),
        ([("started", {}), ("exited", {"exit_code": 137})], "failed", "exit_nonzero"),  # 137 alone is not OOM
        ([("started", {}), ("failed", {"reason": "the runtime lost track of it"})], "failed", "node_lost"),
        ([("failed", {"reason": "image x not present", "cause": "image"})], "failed", "image_missing"),
        ([("failed", {"reason": 'exec: "nope": not found', "cause": "run"})], "failed", "start_failed"),
        ([("started", {}), ("cancelled", {"exit_code": 143})], "cancelled", "cancelled"),
    ],
)
def test_every_terminal_run_says_why(
    client: Client, events: list[tuple[str, dict[str, object]]], status: str, reason: str
) -> None:
    node = FakeNode(client, "n1")
    node.heartbeat()
    run = submit(client)
    wait_run_status(client, run.id, "scheduled")
    node.report(run.id, ("claimed", {}), *events)
    ended = client.send(Calls.get_run(run.id))
    assert (ended.status, ended.reason) == (status, reason)
    if reason == "oom_killed":
        assert "more memory than its limit" in (ended.message or "")


def test_a_run_cancelled_before_it_started_says_cancelled(client: Client) -> None:
    run = submit(client)
    assert client.send(Calls.cancel_run(run.id)).reason == "cancelled"


def test_the_server_ends_a_run_its_node_lets_run_past_the_deadline(client: Client) -> None:
    node = FakeNode(client, "n1")
    node.heartbeat()
    run = submit(client, deadline_seconds=1)
    wait_run_status(client, run.id, "scheduled")
    node.start(run.id)  # and then says nothing more: silent, or it does not enforce deadlines
    probe = node.send(run.id, m.NodeEventBatch(node_id="n1", events=[]))  # as a restarted node asks
    assert probe.deadline_seconds == 1
    assert probe.started_at is not None

    ended = wait_run_status(client, run.id, "failed", timeout=15)  # deadline 1 s + grace 1 s + reaper pass
    assert ended.reason == "deadline_exceeded"
    assert "RUN_DEADLINE_GRACE" in (ended.message or "")
    assert client.send(Calls.get_node("n1")).running == 0
    # the node, heard from again, is told to stop it
    assert run.id in node.heartbeat().stop_runs
