"""The node listing API at fleet size, printed as JSON.

Starts a real apiserver on SQLite and, when PostgreSQL 15's binaries are installed, on a throwaway
PostgreSQL, seeds NODES node rows straight into the database, and times
`GET /api/v1/nodes?limit=NODES` (the whole fleet in one page) and a label + status filtered
listing (a tenth of the fleet) over HTTP, the answer read and decoded in full.

Target: the whole listing of 10,000 nodes, and the filtered one, under 1 s (median).
(tests/server/test_api_nodes.py checks that the listing is complete and right, not its speed.)

    python bench/node_listing.py [--nodes 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import db  # noqa: E402
from tests.support.postgres import PG_BIN, PostgresServer  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TARGET_S = 1.0


def timed(client: Any, params: dict[str, Any], runs: int, expected: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get("/api/v1/nodes", params=params)
        response.raise_for_status()
        body = response.json()
        samples.append(time.perf_counter() - started)
        if body["total"] != expected or len(body["items"]) != expected:
            raise RuntimeError(f"{params}: {body['total']} nodes listed, expected {expected}")
    samples.sort()
    median = statistics.median(samples)
    return {
        "median_s": round(median, 4),
        "min_s": round(samples[0], 4),
        "max_s": round(samples[-1], 4),
        "runs": runs,
        "nodes_listed": expected,
        "target_s": TARGET_S,
        "target_met": median < TARGET_S,
    }


def measure(database_url: str, nodes: int, runs: int, data_dir: Path) -> dict[str, Any]:
    # NODE_OFFLINE_AFTER is generous so no seeded node turns offline while it is measured
    env = {"DATABASE_URL": database_url, "NODE_OFFLINE_AFTER": "3600", "LOG_LEVEL": "WARNING"}
    with ServerProcess(env=env, data_dir=data_dir) as server:
        db.insert_nodes(database_url, nodes)  # labels: os=linux, rack=r0..r9
        with server.client(timeout=60.0) as client:
            client.get("/api/v1/nodes", params={"limit": 10}).raise_for_status()  # warm the pool
            return {
                "all": timed(client, {"limit": nodes}, runs, nodes),
                "filtered_rack_r3_online": timed(
                    client, {"selector": "rack=r3", "status": "online", "limit": nodes}, runs, nodes // 10
                ),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result: dict[str, Any] = {"nodes": args.nodes}
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        sqlite_url = f"sqlite:///{sqlite_dir / 'apiserver.db'}"
        result["sqlite"] = measure(sqlite_url, args.nodes, args.runs, sqlite_dir)
        if (PG_BIN / "postgres").exists():
            pg_dir = Path(tmp) / "postgres"
            pg_dir.mkdir()
            with PostgresServer() as postgres:
                result["postgres"] = measure(postgres.create_database("bench"), args.nodes, args.runs, pg_dir)
        else:
            result["postgres"] = f"skipped: no PostgreSQL 15 binaries in {PG_BIN}"
    result["cpus"] = os.cpu_count()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
