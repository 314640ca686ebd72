"""Scenario 1: the apiserver is SIGKILLed in the middle of a burst of submissions and placements,
then started again on the same database (SQLite and PostgreSQL); and once kept down for longer
than the lost-run window, which must not cost the healthy nodes their runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import LOST_AFTER, Api, Burst, Faults
from tests.support.images import TEST_IMAGE
from tests.support.wait import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RUNS = 40
LONG_RUNS = 2  # the first runs of the burst outlast the outage: running on the nodes across it


def _placed(api: Api) -> int:
    runs = Api._quietly(api.runs) or {}
    return sum(1 for run in runs.values() if run["status"] != "queued")


def _kill_mid_burst(faults: Faults, database_url: str, outage: float, long_run: float) -> None:
    server = faults.apiserver(database_url=database_url)
    api = faults.api(server)
    faults.node(server, "node-a")
    faults.node(server, "node-b")
    burst = Burst(
        [api],
        RUNS,
        lambda i: {"image": TEST_IMAGE, "command": faults.ledger.command(long_run if i < LONG_RUNS else 0.3)},
    )
    burst.start()
    wait_until(lambda: burst.accepted() >= RUNS // 3 and _placed(api) >= 4, "submissions and placements")

    server.kill()
    time.sleep(outage)  # the point: the server is gone for this long while runs go on
    server.start()

    submissions = burst.wait()
    runs = api.wait_settled()
    faults.check(api, submissions)
    assert not submissions.unexpected, submissions.unexpected
    assert len(submissions.created) == RUNS
    assert {run["status"] for run in runs.values()} == {"succeeded"}, {
        run_id: (run["status"], run["message"])
        for run_id, run in runs.items()
        if run["status"] != "succeeded"
    }


def test_apiserver_killed_mid_burst_loses_and_doubles_nothing(faults: Faults, database_url: str) -> None:
    """Killed and started again at once (a crash and its supervisor's restart)."""
    _kill_mid_burst(faults, database_url, outage=0.5, long_run=6.0)


def test_apiserver_down_longer_than_the_lost_window_costs_no_healthy_node_its_runs(
    faults: Faults, tmp_path: Path
) -> None:
    """Regression: nodes backed their heartbeat retries off to 30 s while the server was down, so
    after an outage longer than NODE_OFFLINE_AFTER + RUN_LOST_GRACE the restarted server heard
    nothing from them for a whole window and declared their running runs lost. Heartbeat retries
    now wait at most one heartbeat interval."""
    outage = LOST_AFTER + 3.0
    _kill_mid_burst(faults, f"sqlite:///{tmp_path / 'apiserver.db'}", outage=outage, long_run=outage + 8.0)
