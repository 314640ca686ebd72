"""Node event batches end to end: many RunReporters of one node sharing an EventShipper against
a real apiserver (SQLite and PostgreSQL), each run answered on its own."""

from __future__ import annotations

import asyncio

import pytest

from nodeapi import models as m
from nodeapi.client import AsyncClient, Calls, Client
from nodemanager.reporter import EventShipper, EventsRejected, RunReporter
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode, event_types, wait_run_status

RUNS = 12


async def test_reporters_of_one_node_share_requests_and_are_answered_each(
    apiserver: ApiServerFactory,
) -> None:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api:
        FakeNode(api, "n1", max_concurrent=RUNS).heartbeat()
        runs = [
            api.send(Calls.create_run(m.RunCreate(image="busybox", command=["true"]))) for _ in range(RUNS)
        ]
        for run in runs:
            wait_run_status(api, run.id, "scheduled")
        stranger = api.send(Calls.create_run(m.RunCreate(image="busybox", node_selector={"zone": "none"})))

        async with AsyncClient(server.base_url) as client:
            shipper = EventShipper(client, "n1")
            reporters = [RunReporter(client, "n1", run.id, 0, 1, shipper) for run in runs]
            refused = RunReporter(client, "n1", stranger.id, 0, None, shipper)
            try:
                for reporter in [*reporters, refused]:
                    reporter.emit("claimed")
                    reporter.emit("started")
                for index, reporter in enumerate(reporters):
                    await reporter.log("stdout", f"line {index}\n", None)
                    reporter.emit("exited", {"exit_code": index % 2})
                await asyncio.wait_for(asyncio.gather(*(r.finished() for r in reporters)), 30)
                with pytest.raises(EventsRejected, match="not placed on node"):
                    await asyncio.wait_for(refused.wait_acked(1), 30)
            finally:
                for reporter in [*reporters, refused]:
                    await reporter.close()
                await shipper.close()
            # 13 runs with 2-3 sends each went in far fewer requests than one per batch
            assert not shipper.per_run
            assert shipper.requests < 2 * RUNS

        for index, run in enumerate(runs):
            stored = api.send(Calls.get_run(run.id))
            assert stored.status == ("succeeded" if index % 2 == 0 else "failed")
            assert event_types(api, run.id)[-4:] == ["claimed", "started", "log", "exited"]
        assert api.send(Calls.get_node("n1")).running == 0
        assert api.send(Calls.get_run(stranger.id)).status == "queued"
