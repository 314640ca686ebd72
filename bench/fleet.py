"""A simulated fleet heartbeating one apiserver in compressed time, printed as JSON.

NODES simulated nodes (at most 100,000) send a real nodemanager's heartbeat body every INTERVAL
seconds, spread evenly over the interval, to one apiserver (PostgreSQL by default, or SQLite)
started with NODE_HEARTBEAT_INTERVAL=INTERVAL and NODE_OFFLINE_AFTER=OFFLINE_AFTER (3 s and 9 s
by default: the default 30 s / 90 s, ten times faster). The client is raw asyncio (uvloop when
installed): CONNECTIONS keep-alive HTTP/1.1 connections on the loopback, one request in flight
on each, no HTTP library in the way. Its own ceiling is measured first, closed-loop against
bench/minimal_upsert.py (the least a Litestar endpoint can do per heartbeat), so a fleet the
generator cannot drive is not blamed on the server.

Phases: every node registers (its first heartbeat, closed-loop); one interval of warm-up on the
schedule; then STEADY seconds measured: heartbeat latency p50/p99, how late the generator sent
(schedule lag: above OFFLINE_AFTER - INTERVAL a node would rightly look offline), and every
OFFLINE listing read once a second (any node listed that is still heartbeating is a false
offline; target 0). Then SAMPLE nodes stop: each is read (GET /api/v1/nodes/{id}) every 50 ms
from shortly before its window ends until it shows offline; detection latency / OFFLINE_AFTER,
target <= 1.05, counted from the send of its last heartbeat. The database's size is read in steady state.

    python bench/fleet.py [--nodes 5000] [--interval 3] [--offline-after 9] [--steady 30]
                          [--database postgres|sqlite] [--connections 64] [--sample 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.heartbeat import BODY, minimal_endpoint  # noqa: E402
from bench.measure import process_cpu  # noqa: E402
from tests.support import db  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

MAX_NODES = 100_000
MAX_CONNECTIONS = 256
HOST = "127.0.0.1"  # loopback only
TARGET_FALSE_OFFLINES = 0
TARGET_DETECTION_RATIO = 1.05
PROBE_EVERY = 0.05  # seconds between reads of a stopped node's status


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; answers (status, body)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: Any = None  # an asyncio.Transport (uvloop's is not a subclass)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        status = int(head[9:12])
        del self._buffer[: end + 4 + length]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        assert self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(port: int) -> Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(Connection, HOST, port)
    return protocol


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def closed_loop(port: int, requests: list[bytes], connections: int, seconds: float | None) -> float:
    """Send `requests` in turn as fast as answered (all of them, or for `seconds`); answers per second."""
    conns = [await connect(port) for _ in range(connections)]
    next_index = 0
    done = 0
    deadline = None if seconds is None else time.monotonic() + seconds

    async def worker(conn: Connection) -> None:
        nonlocal next_index, done
        while (deadline is None and next_index < len(requests)) or (
            deadline is not None and time.monotonic() < deadline
        ):
            request = requests[next_index % len(requests)]
            next_index += 1
            status, body = await conn.send(request)
            if status != 200:
                raise RuntimeError(f"answered {status}: {body[:300]!r}")
            done += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()
    return done / (time.monotonic() - started)


class Fleet:
    """The schedule: node i sends at start + i * INTERVAL / NODES, then every INTERVAL."""

    def __init__(self, port: int, nodes: int, interval: float, connections: int) -> None:
        self.port = port
        self.interval = interval
        self.connections = connections
        self.requests = [
            request_bytes("POST", "/api/v1/nodes/heartbeat", (BODY % i).encode()) for i in range(nodes)
        ]
        self.stopped: set[int] = set()
        self.last_sent: dict[int, float] = {}  # monotonic send time of each node's last heartbeat
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors = 0
        self.measuring = False
        self._queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def run(self, until: asyncio.Event) -> None:
        conns = [await connect(self.port) for _ in range(self.connections)]
        workers = [asyncio.create_task(self._worker(conn)) for conn in conns]
        try:
            await self._schedule(until)
        finally:
            for task in workers:
                task.cancel()
            for conn in conns:
                conn.close()

    async def _schedule(self, until: asyncio.Event) -> None:
        nodes = len(self.requests)
        step = self.interval / nodes
        start = time.monotonic()
        sent = 0  # heartbeats put on the queue since start, over all nodes
        while not until.is_set():
            now = time.monotonic()
            due = int((now - start) / step) + 1
            while sent < due:
                node = sent % nodes
                if node not in self.stopped:
                    self._queue.put_nowait((node, start + sent * step))
                sent += 1
            await asyncio.sleep(0.005)

    async def _worker(self, conn: Connection) -> None:
        while True:
            node, due = await self._queue.get()
            if node in self.stopped:
                continue
            sent = time.monotonic()
            try:
                status, _ = await conn.send(self.requests[node])
            except ConnectionError:
                self.errors += 1
                conn = await connect(self.port)
                continue
            answered = time.monotonic()
            if status != 200:
                self.errors += 1
                continue
            self.last_sent[node] = sent
            if self.measuring:
                self.latencies.append(answered - sent)
                self.lags.append(sent - due)


async def watch_offline(port: int, fleet: Fleet, seconds: float) -> tuple[int, set[str], int]:
    """Read the OFFLINE listing once a second; (reads, ids listed offline while heartbeating, worst count)."""
    conn = await connect(port)
    reads, worst = 0, 0
    false: set[str] = set()
    deadline = time.monotonic() + seconds
    request = request_bytes("GET", "/api/v1/nodes?status=offline&limit=1000")
    try:
        while time.monotonic() < deadline:
            status, body = await conn.send(request)
            if status != 200:
                raise RuntimeError(f"listing answered {status}: {body[:300]!r}")
            listed = json.loads(body)
            reads += 1
            wrong = {item["id"] for item in listed["items"] if int(item["id"][3:]) not in fleet.stopped}
            false |= wrong
            worst = max(worst, listed["total"] - len(fleet.stopped))
            await asyncio.sleep(1.0)
    finally:
        conn.close()
    return reads, false, worst


async def detect(port: int, fleet: Fleet, sample: list[int], offline_after: float) -> list[float]:
    """Stop the sample's nodes; per node, seconds from its last heartbeat's send to the first read
    offline. Each node is read on its own connection every PROBE_EVERY from shortly before its
    offline window ends, so the reads themselves add little load and no queueing."""
    fleet.stopped.update(sample)
    await asyncio.sleep(0.5)  # heartbeats already on their way are answered
    deadline = time.monotonic() + 2 * offline_after + 10

    async def probe(node: int) -> float:
        last = fleet.last_sent[node]
        await asyncio.sleep(max(0.0, last + offline_after - 0.5 - time.monotonic()))
        conn = await connect(port)
        request = request_bytes("GET", f"/api/v1/nodes/hb-{node:05d}")
        try:
            while time.monotonic() < deadline:
                status, body = await conn.send(request)
                if status == 200 and json.loads(body)["status"] == "offline":
                    return time.monotonic() - last
                await asyncio.sleep(PROBE_EVERY)
        finally:
            conn.close()
        raise RuntimeError(f"stopped node hb-{node:05d} never shown offline")

    return list(await asyncio.gather(*(probe(node) for node in sample)))


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[tuple[str, Any]]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'apiserver.db'}", None
        return
    with PostgresServer() as postgres:
        yield postgres.create_database("fleet"), postgres


def seed(database_url: str, nodes: int, env: dict[str, str], tmp: Path) -> float:
    """A fleet that was heartbeating when the measured apiserver starts: node 0 registered
    through the API of a first apiserver process (its row, report digest and all), copied to
    the other ids in SQL with a last heartbeat of now. Seconds taken."""
    started = time.monotonic()
    with ServerProcess(env, data_dir=tmp) as first, first.client() as client:
        headers = {"Content-Type": "application/json"}
        client.post("/api/v1/nodes/heartbeat", content=BODY % 0, headers=headers).raise_for_status()
    db.clone_node(database_url, "hb-00000", [f"hb-{i:05d}" for i in range(1, nodes)], datetime.now(UTC))
    return round(time.monotonic() - started, 1)


def database_size(kind: str, url: str, postgres: Any, tmp: Path) -> dict[str, int]:
    if kind == "sqlite":
        files = [tmp / "apiserver.db", tmp / "apiserver.db-wal"]
        return {"database_bytes": sum(f.stat().st_size for f in files if f.exists())}
    out = postgres.query(
        url,
        "SELECT pg_database_size(current_database()) || ' ' || pg_total_relation_size('nodes')",
    ).split()
    return {"database_bytes": int(out[0]), "nodes_table_bytes": int(out[1])}


async def measure(args: argparse.Namespace, port: int, pid: int, size: Any) -> dict[str, Any]:
    fleet = Fleet(port, args.nodes, args.interval, args.connections)
    stop = asyncio.Event()
    runner = asyncio.create_task(fleet.run(stop))
    await asyncio.sleep(args.interval + 1)  # warm-up: one interval on the schedule
    fleet.measuring = True
    cpu_before, wall_before = process_cpu(pid), time.monotonic()
    reads, false, worst = await watch_offline(port, fleet, args.steady)
    cpu = (process_cpu(pid) - cpu_before) / (time.monotonic() - wall_before)
    fleet.measuring = False
    steady = {
        "heartbeats": len(fleet.latencies),
        "per_s": round(len(fleet.latencies) / args.steady),
        "target_per_s": round(args.nodes / args.interval),
        "p50_ms": round(1000 * percentile(fleet.latencies, 0.5), 2),
        "p99_ms": round(1000 * percentile(fleet.latencies, 0.99), 2),
        "schedule_lag_p99_ms": round(1000 * percentile(fleet.lags, 0.99), 2),
        "schedule_lag_max_ms": round(1000 * max(fleet.lags, default=0.0), 2),
        "errors": fleet.errors,
        "offline_listing_reads": reads,
        "false_offlines": len(false),
        "false_offline_ids": sorted(false)[:20],
        "worst_offline_excess": worst,
        "apiserver_cpu_cores": round(cpu, 2),
        **size(),
    }
    sample = random.Random(16).sample(range(args.nodes), args.sample)
    latencies = await detect(port, fleet, sample, args.offline_after)
    stop.set()
    await runner
    ratios = [latency / args.offline_after for latency in latencies]
    return {
        "steady": steady,
        "detection": {
            "sample": len(sample),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "target_ratio_max": TARGET_DETECTION_RATIO,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--offline-after", type=float, default=9.0)
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()
    if not 1 <= args.nodes <= MAX_NODES:
        sys.exit(f"--nodes: 1..{MAX_NODES}")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        sys.exit(f"--connections: 1..{MAX_CONNECTIONS}")
    args.sample = min(args.sample, args.nodes)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result: dict[str, Any] = {
        "nodes": args.nodes,
        "interval_s": args.interval,
        "offline_after_s": args.offline_after,
        "database": args.database,
        "connections": args.connections,
    }
    env = {
        "LOG_LEVEL": "WARNING",
        "NODE_HEARTBEAT_INTERVAL": str(args.interval),
        "NODE_OFFLINE_AFTER": str(args.offline_after),
        "HEARTBEAT_RATE_BURST": "1000",
        "HEARTBEAT_RATE_PER_SECOND": "1000",
    }
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        with minimal_endpoint(tmp) as minimal_port:
            sample = [
                request_bytes("POST", "/api/v1/nodes/heartbeat", (BODY % i).encode()) for i in range(1000)
            ]
            ceiling = asyncio.run(closed_loop(minimal_port, sample, args.connections, 5.0))
        result["generator_ceiling_per_s"] = round(ceiling)  # against the minimal endpoint
        with database(args.database, tmp) as (url, postgres):
            result["seed_s"] = seed(url, args.nodes, {**env, "DATABASE_URL": url}, tmp)
            server = ServerProcess({**env, "DATABASE_URL": url}, data_dir=tmp).start()
            try:
                pid = server.pid
                assert pid is not None
                size = functools.partial(database_size, args.database, url, postgres, tmp)
                result.update(asyncio.run(measure(args, server.port, pid, size)))
                problems = [
                    line
                    for line in server.log().splitlines()
                    if any(level in line.lower() for level in ('"warning"', '"error"', "traceback"))
                ]
                result["apiserver_log_problems"] = {"lines": len(problems), "last": problems[-5:]}
            finally:
                server.stop()
    steady, detection = result["steady"], result["detection"]
    result["targets"] = {
        "false_offlines": {"target": TARGET_FALSE_OFFLINES, "met": steady["false_offlines"] == 0},
        "detection_ratio_max": {
            "target": TARGET_DETECTION_RATIO,
            "met": detection["ratio_max"] <= TARGET_DETECTION_RATIO,
        },
        "rate_held": {
            "target_per_s": steady["target_per_s"],
            # the schedule kept (2 % slack for the edges of the window) and never so late that a
            # node would rightly look offline
            "met": steady["per_s"] >= 0.98 * steady["target_per_s"]
            and steady["schedule_lag_max_ms"] < 1000 * (args.offline_after - args.interval),
        },
    }
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
