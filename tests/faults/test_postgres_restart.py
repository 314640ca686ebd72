"""Scenario 3: PostgreSQL stops and starts again (same data directory, same port) under load. The
apiserver answers 503 meanwhile, never 500; no run fails for it, and everything completes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import LOST_AFTER, Api, Burst, Faults
from tests.support.images import TEST_IMAGE
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]

RUNS = 30
LONG_RUNS = 2
# what the apiserver logs for an error it answers with 500
INTERNAL_ERROR = re.compile(r"unexpected error|internal database error|database error")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A cluster of its own: the session's is shared by other tests, this one is stopped."""
    with PostgresServer() as server:
        yield server


def _placed(api: Api) -> int:
    runs = Api._quietly(api.runs) or {}
    return sum(1 for run in runs.values() if run["status"] != "queued")


@pytest.mark.parametrize(
    "outage",
    [1.0, LOST_AFTER + 2.0],
    ids=["restart", "down-longer-than-the-lost-window"],
)
def test_postgres_restart_under_load_fails_no_run(
    faults: Faults, postgres: PostgresServer, outage: float
) -> None:
    server = faults.apiserver(database_url=postgres.create_database("faults"))
    api = faults.api(server)
    faults.node(server, "node-a")
    faults.node(server, "node-b")
    burst = Burst(
        [api],
        RUNS,
        lambda i: {
            "image": TEST_IMAGE,
            "command": faults.ledger.command(outage + 6.0 if i < LONG_RUNS else 0.3),
        },
    )
    burst.start()
    wait_until(lambda: burst.accepted() >= RUNS // 3 and _placed(api) >= 4, "submissions and placements")

    postgres.shutdown("fast")
    time.sleep(outage)  # the point: the database is gone for this long while runs go on
    postgres.restart()

    submissions = burst.wait()
    # promptly: a pass that failed during the outage is retried, not left for the 30 s reclaim
    runs = api.wait_settled(timeout=20.0)
    faults.check(api, submissions)
    assert not submissions.unexpected, submissions.unexpected
    assert submissions.answers["503"] > 0 or outage < 2, "submissions met the outage"
    assert {run["status"] for run in runs.values()} == {"succeeded"}, {
        rid: (run["status"], run["message"]) for rid, run in runs.items() if run["status"] != "succeeded"
    }
    internal = [line for line in server.log().splitlines() if INTERNAL_ERROR.search(line)]
    assert not internal, "\n".join(internal[:20])
