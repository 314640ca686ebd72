"""Scenario 6: a node whose clock is 10 minutes ahead (its nodemanager under libfaketime). The
server's clock alone decides liveness and times events: the node stays online, its runs complete,
each event's `at` is the server's time and the node's own time is kept in `data.node_at`."""

from __future__ import annotations

import glob
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.faults.harness import Faults
from tests.support.ports import require_binary

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.docker]

SKEW = timedelta(minutes=10)
NODE_EVENTS = ("claimed", "started", "exited")


def _libfaketime() -> str:
    require_binary("faketime", "libfaketime (Debian package faketime)")
    found = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1")
    )
    if not found:
        require_binary("/usr/lib/faketime/libfaketime.so.1", "libfaketime.so.1 (Debian package libfaketime)")
    return found[0]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_node_ten_minutes_ahead_stays_online_and_its_events_keep_the_server_time(
    docker_client: Any, faults: Faults
) -> None:
    server = faults.apiserver()
    api = faults.api(server)
    # the realtime clock only: timers and timeouts (monotonic) stay real, as on a host whose
    # wall clock is wrong
    skewed = {
        "LD_PRELOAD": _libfaketime(),
        "FAKETIME": f"+{int(SKEW.total_seconds() // 60)}m",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    node = faults.node(server, "node-skewed", "docker", **skewed)
    run_ids = [api.submit(faults.ledger.command(1.5)) for _ in range(4)]

    seen = set()
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        seen.add(api.node("node-skewed")["status"])  # type: ignore[index]
        runs = api.runs()
        if all(runs[rid]["status"] not in ("queued", "scheduled", "running") for rid in run_ids):
            break
        time.sleep(0.2)
    runs = api.wait_settled()
    faults.check(api)

    assert seen == {"online"}
    assert {runs[rid]["status"] for rid in run_ids} == {"succeeded"}
    # the nodemanager really lived 10 minutes ahead: its own log lines say so
    first_line = node.log().splitlines()[0]
    logged = _time(json.loads(first_line)["timestamp"])
    assert logged - datetime.now(UTC) > SKEW - timedelta(minutes=1), first_line
    now = datetime.now(UTC)
    for run_id in run_ids:
        for event in api.events(run_id):
            at = _time(event["at"])
            assert abs(now - at) < timedelta(minutes=1), event  # the server's clock
            if event["type"] in NODE_EVENTS:
                node_at = _time(event["data"]["node_at"])
                assert abs(node_at - at - SKEW) < timedelta(seconds=30), event
