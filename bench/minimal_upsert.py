"""The peer of bench/heartbeat.py: the least a Litestar endpoint can do for a heartbeat.

One POST route that decodes the same body (a msgspec Struct) and upserts the node's row in a
SQLite WAL database (one connection, synchronous=NORMAL, one statement and a commit per
request), served by uvicorn with uvloop and httptools, one worker, no access log: the ceiling a
heartbeat that writes the database each time can reach on this machine.

    python bench/minimal_upsert.py PORT DATABASE_PATH
"""

from __future__ import annotations

import sqlite3
import sys
import time

import msgspec
import uvicorn
from litestar import Litestar, post


class Capacity(msgspec.Struct):
    max_concurrent: int = 1


class Heartbeat(msgspec.Struct):
    node_id: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    active_runs: list[str] = msgspec.field(default_factory=list)


class Reply(msgspec.Struct):
    node_id: str
    status: str
    heartbeat_interval: float
    offline_after: float
    stop_runs: list[str]


UPSERT = """
INSERT INTO nodes (id, labels, max_concurrent, last_heartbeat_at) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, max_concurrent = excluded.max_concurrent,
    last_heartbeat_at = excluded.last_heartbeat_at
"""


def make_app(path: str) -> Litestar:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, labels TEXT NOT NULL, "
        "max_concurrent INTEGER NOT NULL, last_heartbeat_at REAL NOT NULL)"
    )
    encode = msgspec.json.encode

    @post("/api/v1/nodes/heartbeat", status_code=200)
    async def heartbeat(data: Heartbeat) -> Reply:
        connection.execute("BEGIN")
        connection.execute(
            UPSERT, (data.node_id, encode(data.labels), data.capacity.max_concurrent, time.time())
        )
        connection.execute("COMMIT")
        return Reply(data.node_id, "online", 30.0, 90.0, [])

    return Litestar(route_handlers=[heartbeat], logging_config=None, debug=False)


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        make_app(path),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
