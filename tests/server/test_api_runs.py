"""Runs through a real apiserver process (SQLite and PostgreSQL): the admin API, placement,
cancel in every state and node-event ingestion, with a scripted node (tests/support/fake_node)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeapi import errors
from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, event_types, wait_run_status
from tests.support.wait import eventually


@pytest.fixture
def client(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api:
        yield api


def submit(api: Client, image: str = "busybox", **kwargs: object) -> m.Run:
    return api.send(Calls.create_run(m.RunCreate(image=image, command=["echo", "hi"], **kwargs)))  # type: ignore[arg-type]


def node_running(api: Client, node_id: str) -> int:
    return api.send(Calls.get_node(node_id)).running


def test_create_list_get_and_events(client: Client) -> None:
    created = [submit(client, env={"GREETING": "hi"}, node_selector={"zone": "nowhere"}) for _ in range(3)]
    first = created[0]
    assert first.status == "queued"
    assert first.node_id is None
    assert first.exit_code is None
    assert first.env == {"GREETING": "hi"}
    assert first.command == ["echo", "hi"]
    assert client.send(Calls.get_run(first.id)).image == "busybox"

    listed = client.send(Calls.list_runs())
    assert listed.total == 3
    assert listed.limit == 1000
    assert [r.id for r in listed.items] == [r.id for r in reversed(created)]  # newest first
    page = client.send(Calls.list_runs(limit=2, offset=2))
    assert [r.id for r in page.items] == [first.id]
    assert page.total == 3
    assert client.send(Calls.list_runs(status="running")).total == 0
    assert client.send(Calls.list_runs(status="queued,running")).total == 3
    assert client.send(Calls.list_runs(node_id="nobody")).total == 0

    # fits nowhere: stays queued and the events say why
    eventually(lambda: "unschedulable" in event_types(client, first.id))
    events = client.send(Calls.run_events(first.id))
    assert [e.seq for e in events.items] == list(range(1, len(events.items) + 1))
    assert events.items[0].type == "created"
    assert events.items[1].type == "queued"
    assert "no nodes" in events.items[2].data["reason"]
    assert client.send(Calls.run_events(first.id, after=2)).items[0].seq == 3

    with pytest.raises(errors.NotFound):
        client.send(Calls.get_run("run-missing"))
    with pytest.raises(errors.NotFound):
        client.send(Calls.run_events("run-missing"))


BAD_BODIES: list[tuple[dict[str, object], str]] = [
    ({"image": "", "command": ["x"]}, "image must not be empty"),
    ({"image": "bad image", "command": []}, "whitespace"),
    ({"image": "x" * 600}, "at most 512"),
    ({"image": "busybox", "env": {"1BAD": "x"}}, "variable name"),
    ({"image": "busybox", "node_selector": {"bad key!": "x"}}, "node_selector"),
    ({"image": "busybox", "selector_expressions": ["gpu in ()"]}, "at least one value"),
    ({"image": "busybox", "command": "echo hi"}, "command"),
]


def test_bad_input_is_rejected_with_a_message(client: Client) -> None:
    for body, message in BAD_BODIES:
        response = client._http.post("/api/v1/runs", json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["detail"], (body, response.text)
    assert client.send(Calls.list_runs()).total == 0
    for params in ({"status": "sleeping"}, {"limit": 0}, {"limit": 10_001}, {"offset": -1}):
        assert client._http.get("/api/v1/runs", params=params).status_code == 400, params
    assert client._http.get("/api/v1/runs/x/events", params={"wait": 31}).status_code == 400


def test_placement_by_labels_least_load_and_capacity(client: Client) -> None:
    gpu = FakeNode(client, "gpu-1", {"gpu": "true"}, max_concurrent=1)
    big = FakeNode(client, "cpu-big", {"gpu": "false"}, max_concurrent=4)
    small = FakeNode(client, "cpu-small", {"gpu": "false"}, max_concurrent=2)
    for node in (gpu, big, small):
        node.heartbeat()

    on_gpu = submit(client, node_selector={"gpu": "true"})
    assert wait_run_status(client, on_gpu.id, "scheduled").node_id == "gpu-1"
    # gpu-1 is full now: the next gpu run waits and its message says why; merely waiting for a
    # slot earns no event (under load most runs wait)
    waiting = submit(client, node_selector={"gpu": "true"})
    eventually(lambda: "capacity" in (client.send(Calls.get_run(waiting.id)).message or ""))
    assert "unschedulable" not in event_types(client, waiting.id)

    placed: list[str | None] = []
    for _ in range(4):
        run = submit(client, selector_expressions=["gpu notin (true)"])
        placed.append(wait_run_status(client, run.id, "scheduled").node_id)
    # least loaded by running / max_concurrent, ties by running, then by node id
    assert placed == ["cpu-big", "cpu-small", "cpu-big", "cpu-small"]
    assert node_running(client, "cpu-big") == 2
    assert node_running(client, "cpu-small") == 2

    # a freed slot places the waiting run at once
    gpu.start(on_gpu.id)
    gpu.report(on_gpu.id, ("exited", {"exit_code": 0}))
    assert wait_run_status(client, waiting.id, "scheduled").node_id == "gpu-1"


def test_unschedulable_run_placed_when_node_joins_or_undrains(client: Client) -> None:
    run = submit(client, node_selector={"zone": "a"})
    eventually(lambda: "unschedulable" in event_types(client, run.id))
    node = FakeNode(client, "zone-a", {"zone": "a"})
    node.heartbeat()
    assert wait_run_status(client, run.id, "scheduled").node_id == "zone-a"

    client.send(Calls.patch_node("zone-a", m.NodePatch(status="draining")))
    second = submit(client, node_selector={"zone": "a"})
    eventually(lambda: "draining" in (client.send(Calls.get_run(second.id)).message or ""))
    assert node.poll().draining is True
    client.send(Calls.patch_node("zone-a", m.NodePatch(status="online")))
    assert wait_run_status(client, second.id, "scheduled", timeout=5).node_id == "zone-a"


def test_cancel_in_every_state(client: Client) -> None:
    queued = submit(client, node_selector={"pool": "x"})
    cancelled = client.send(Calls.cancel_run(queued.id))
    assert cancelled.status == "cancelled"
    assert cancelled.cancel_requested
    with pytest.raises(errors.Conflict, match="already cancelled"):
        client.send(Calls.cancel_run(queued.id))
    audit = client.send(Calls.audit(target_id=queued.id)).items
    assert sorted(entry.action for entry in audit) == ["run.cancel", "run.create"]

    node = FakeNode(client, "worker", {"pool": "x"}, max_concurrent=3)
    node.heartbeat()
    unclaimed, claimed, running = (submit(client, node_selector={"pool": "x"}) for _ in range(3))
    for run in (unclaimed, claimed, running):
        wait_run_status(client, run.id, "scheduled")
    assert node_running(client, "worker") == 3
    node.report(claimed.id, ("claimed", {}))
    node.start(running.id)

    # not claimed yet: it never reached a container, so it ends at once and frees the slot
    assert client.send(Calls.cancel_run(unclaimed.id)).status == "cancelled"
    assert node_running(client, "worker") == 2
    assert unclaimed.id not in [a.run.id for a in node.poll().assignments]
    late = node.report(unclaimed.id, ("claimed", {}))
    assert late.status == "cancelled"
    assert late.cancel_requested

    for run in (claimed, running):
        answer = client.send(Calls.cancel_run(run.id))
        assert answer.cancel_requested
        assert answer.status in ("scheduled", "running")
        assert client.send(Calls.cancel_run(run.id)).cancel_requested  # idempotent while pending
        assert "cancel_requested" in event_types(client, run.id)
    work = node.poll()
    assert sorted(work.cancel_runs) == sorted([claimed.id, running.id])
    # not in stop_runs: the node must report `cancelled`, not just drop them
    assert node.heartbeat([claimed.id, running.id, "run-unknown"]).stop_runs == ["run-unknown"]

    ack = node.report(running.id, ("cancelled", {"exit_code": 137}))
    assert ack.status == "cancelled"
    assert ack.cancel_requested
    node.report(claimed.id, ("cancelled", {}))
    assert client.send(Calls.get_run(running.id)).exit_code == 137
    assert node_running(client, "worker") == 0
    assert node.poll().cancel_runs == []
    with pytest.raises(errors.Conflict, match="already cancelled"):
        client.send(Calls.cancel_run(running.id))


def test_node_events_are_idempotent_and_free_the_slot_once(client: Client) -> None:
    node = FakeNode(client, "n1", max_concurrent=2)
    other = FakeNode(client, "n2")
    node.heartbeat()
    run = submit(client)
    wait_run_status(client, run.id, "scheduled")
    assert node.poll().assignments[0].run.id == run.id

    with pytest.raises(errors.Forbidden, match="not placed on node 'n2'"):
        other.report(run.id, ("claimed", {}))

    batch = node.batch(
        run.id,
        ("claimed", {}),
        ("started", {"container_id": "abc"}),
        ("log", {"stream": "stdout", "text": "hello\n"}),
    )
    assert node.send(run.id, batch).accepted == 3
    again = node.send(run.id, batch)
    assert again.accepted == 0
    assert again.last_node_seq == 3
    assert again.status == "running"
    stored = client.send(Calls.get_run(run.id))
    assert stored.status == "running"
    assert stored.container_id == "abc"
    assert stored.last_node_seq == 3
    assert node.poll().assignments == []  # claimed: no longer handed out

    finished = node.batch(run.id, ("exited", {"exit_code": 3}))
    assert node.send(run.id, finished).status == "failed"
    assert node.send(run.id, finished).accepted == 0
    late = node.report(run.id, ("exited", {"exit_code": 0}), ("log", {"stream": "stderr", "text": "bye"}))
    assert late.status == "failed"
    assert late.accepted == 2

    final = client.send(Calls.get_run(run.id))
    assert final.exit_code == 3
    assert final.message == "exited with code 3"
    assert final.finished_at is not None
    assert node_running(client, "n1") == 0
    events = client.send(Calls.run_events(run.id)).items
    assert [e.type for e in events].count("log") == 2
    assert [e.type for e in events].count("exited") == 2
    assert events[-2].data["ignored"] == "run already failed"
    assert client.send(Calls.run_events(run.id, type="log")).items[0].data["text"] == "hello\n"


def test_node_event_batch_answers_each_run_on_its_own(client: Client) -> None:
    """POST /nodes/{id}/events: many runs' events in one request and one transaction; one run's
    refusal (unknown, another node's, a stale attempt) leaves the others' events applied."""
    node = FakeNode(client, "n1", max_concurrent=3)
    other = FakeNode(client, "n2", max_concurrent=1)
    node.heartbeat()
    runs = [submit(client) for _ in range(3)]
    for run in runs:
        wait_run_status(client, run.id, "scheduled")
    other.heartbeat()
    foreign = submit(client)
    wait_run_status(client, foreign.id, "scheduled")
    assert client.send(Calls.get_run(foreign.id)).node_id == "n2"

    def part(run_id: str, *events: tuple[str, dict[str, object]], attempt: int | None = None) -> m.RunEvents:
        return m.RunEvents(run_id=run_id, events=node.batch(run_id, *events).events, attempt=attempt)

    started = [
        part(r.id, ("claimed", {}), ("started", {}), ("log", {"stream": "stdout", "text": "hi\n"}))
        for r in runs
    ]
    body = m.NodeEventsBatch(
        runs=[
            *started,
            part("run-missing", ("claimed", {})),
            part(foreign.id, ("claimed", {})),
        ]
    )
    results = client.send(Calls.post_node_events("n1", body)).results
    assert [r.run_id for r in results] == [*(r.id for r in runs), "run-missing", foreign.id]
    assert [r.status_code for r in results] == [200, 200, 200, 404, 403]
    assert all(r.ack is not None and r.ack.accepted == 3 and r.ack.status == "running" for r in results[:3])
    assert "not placed on node 'n1'" in (results[4].detail or "")
    assert node_running(client, "n1") == 3

    # resent (an answer lost): nothing stored twice; finishing two runs frees two slots at once
    again = client.send(Calls.post_node_events("n1", m.NodeEventsBatch(runs=started))).results
    assert [r.ack.accepted if r.ack else None for r in again] == [0, 0, 0]
    ended = m.NodeEventsBatch(
        runs=[
            part(runs[0].id, ("exited", {"exit_code": 0})),
            part(runs[1].id, ("exited", {"exit_code": 2})),
            part(runs[2].id, ("log", {"stream": "stdout", "text": "x"}), attempt=99),
        ]
    )
    results = client.send(Calls.post_node_events("n1", ended)).results
    assert [r.status_code for r in results] == [200, 200, 409]
    assert results[2].extra == {"attempt": 1}
    assert [client.send(Calls.get_run(r.id)).status for r in runs] == ["succeeded", "failed", "running"]
    assert node_running(client, "n1") == 1
    for run in runs[:2]:
        seqs = [e.seq for e in client.send(Calls.run_events(run.id)).items]
        assert seqs == list(range(1, len(seqs) + 1))
        assert event_types(client, run.id)[-4:] == ["claimed", "started", "log", "exited"]

    dup = m.NodeEventsBatch(runs=[part(runs[2].id, ("log", {})), part(runs[2].id, ("log", {}))])
    assert [r.status_code for r in client.send(Calls.post_node_events("n1", dup)).results] == [200, 400]


def test_concurrent_submissions_each_get_their_own_run_events_and_audit_entry(
    apiserver: ApiServerFactory,
) -> None:
    """Submissions that arrive together are committed together (a group commit): each still
    answers its own run, with its own `created` and `queued` events and audit entry."""
    server = apiserver()
    images = [f"busybox:{index}" for index in range(40)]

    def submit_one(image: str) -> m.Run:
        with Client(server.base_url) as own:
            return submit(own, image, env={"SECRET_TOKEN": "x"}, secret_env={"PASSWORD": "hunter2"})

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(submit_one, images))
    assert [run.image for run in runs] == images
    assert len({run.id for run in runs}) == len(images)
    with Client(server.base_url) as api:
        assert api.send(Calls.list_runs()).total == len(images)
        for run in runs:
            events = api.send(Calls.run_events(run.id)).items
            assert [(e.seq, e.type) for e in events[:2]] == [(1, "created"), (2, "queued")]
            assert events[0].data == {"image": run.image, "command": ["echo", "hi"]}
            [entry] = api.send(Calls.audit(target_id=run.id)).items
            assert (entry.action, entry.details["image"]) == ("run.create", run.image)
            assert entry.details["env"] == ["SECRET_TOKEN"]  # names only; secret_env is masked whole
            assert "hunter2" not in str(entry.details)


def test_claimed_but_unstarted_run_is_handed_out_again_and_reclaimed(client: Client) -> None:
    node = FakeNode(client, "n1")
    node.heartbeat()
    run = submit(client)
    wait_run_status(client, run.id, "scheduled")
    assert [a.run.id for a in node.poll().assignments] == [run.id]
    assert node.report(run.id, ("claimed", {})).status == "scheduled"

    # the node crashed before starting it: the work channel keeps handing it out (throttled)
    again = node.poll(wait=10)
    assert [a.run.id for a in again.assignments] == [run.id]
    assert again.assignments[0].run.last_node_seq == 1
    reclaimed = node.report(run.id, ("claimed", {}))  # the restarted node claims it once more
    assert (reclaimed.status, reclaimed.accepted, reclaimed.last_node_seq) == ("scheduled", 1, 2)
    assert node.report(run.id, ("started", {"container_id": "c1"})).status == "running"
    assert node.poll().assignments == []
    assert event_types(client, run.id).count("claimed") == 2


def test_events_long_poll_answers_when_an_event_arrives(client: Client) -> None:
    node = FakeNode(client, "n1")
    node.heartbeat()
    run = submit(client)
    wait_run_status(client, run.id, "scheduled")
    last = client.send(Calls.run_events(run.id)).items[-1].seq
    node.start(run.id)
    answered = client.send(Calls.run_events(run.id, after=last, wait=10))
    assert [e.type for e in answered.items] == ["claimed", "started"]
    node.report(run.id, ("exited", {"exit_code": 0}))
    finished = client.send(Calls.run_events(run.id, after=answered.items[-1].seq + 1, wait=10))
    assert finished.items == []
    assert finished.status == "succeeded"


def test_node_token_reaches_only_the_node_endpoints(apiserver: ApiServerFactory) -> None:
    server = apiserver({"ADMIN_TOKEN": "admin-secret", "NODE_JOIN_TOKEN": "join-secret"})
    with (
        Client(server.base_url, token="admin-secret") as admin,
        Client(server.base_url, token="join-secret") as as_node,
    ):
        node = FakeNode(as_node, "n-auth")
        node.heartbeat()
        run = submit(admin)
        wait_run_status(admin, run.id, "scheduled")
        assert [a.run.id for a in node.poll().assignments] == [run.id]
        assert node.start(run.id).status == "running"
        with pytest.raises(errors.Unauthorized) as denied:
            submit(as_node)
        assert denied.value.status_code == 403
        with pytest.raises(errors.Unauthorized):
            as_node.send(Calls.cancel_run(run.id))
        with Client(server.base_url) as anonymous, pytest.raises(errors.Unauthorized):
            anonymous.send(Calls.poll_work("n-auth"))
