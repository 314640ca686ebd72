"""Heartbeat throughput of one apiserver process (SQLite), next to its own /healthz in the same run.

A heartbeat is the server's hottest write path: 10,000 nodes at the default 30 s interval send
333 a second. This starts a real apiserver, registers NODES nodes, then for a bounded time
sends heartbeats of registered nodes from CONCURRENCY asyncio clients in one process, and
does the same against /healthz (no database) as the peer. Prints JSON.

    python bench/heartbeat.py [--nodes 2000] [--concurrency 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.server import ServerProcess  # noqa: E402


def _body(i: int) -> dict[str, object]:
    return {
        "node_id": f"hb-{i:05d}",
        "labels": {"zone": f"z{i % 4}", "gpu": str(i % 2 == 0).lower()},
        "capacity": {"max_concurrent": 4},
        "info": {"hostname": f"host-{i}", "os": "linux", "arch": "amd64"},
        "active_runs": [],
    }


async def _load(base_url: str, nodes: int, concurrency: int, seconds: float, heartbeat: bool) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            start = time.perf_counter()
            if heartbeat:
                response = await client.post("/api/v1/nodes/heartbeat", json=_body(i % nodes))
            else:
                response = await client.get("/healthz")
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, trust_env=False, timeout=30) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def _register(base_url: str, nodes: int) -> float:
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=30) as client:
        for begin in range(0, nodes, 64):
            batch = range(begin, min(nodes, begin + 64))
            responses = await asyncio.gather(
                *(client.post("/api/v1/nodes/heartbeat", json=_body(i)) for i in batch)
            )
            for response in responses:
                response.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with ServerProcess({"LOG_LEVEL": "WARNING"}) as server:
        register_s = asyncio.run(_register(server.base_url, args.nodes))
        heartbeat = asyncio.run(_load(server.base_url, args.nodes, args.concurrency, args.seconds, True))
        healthz = asyncio.run(_load(server.base_url, args.nodes, args.concurrency, args.seconds, False))
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "concurrency": args.concurrency,
                "register_per_s": round(args.nodes / register_s),
                "heartbeat": heartbeat,
                "healthz": healthz,
                "ratio_heartbeat_to_healthz": round(heartbeat["per_s"] / healthz["per_s"], 3),
                "nodes_sustained_at_30s_interval": heartbeat["per_s"] * 30,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
