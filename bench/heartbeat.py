"""Heartbeat ingest of one apiserver process, side by side with the minimal endpoint, in one run.

A heartbeat is the server's hottest path: 100,000 nodes at the default 30 s interval send
3,300 a second. This starts a real apiserver (SQLite, or PostgreSQL with --database postgres)
and bench/minimal_upsert.py (Litestar + uvicorn doing one SQLite upsert per request: the
ceiling of an endpoint that writes each heartbeat), registers NODES nodes with both, then
drives each with `wrk` (Debian package wrk; a Python client saturates before the server does)
and a Lua script that posts a real nodemanager's heartbeat body for node ids in turn. The two
servers are measured alternately, ROUNDS times at each connection count, and the medians are
compared. Prints JSON.

Targets (issue 16): at 32 connections the apiserver reaches 0.8 of the minimal endpoint's
rate; at 4 connections its p99 is under 5 ms.

    python bench/heartbeat.py [--nodes 2000] [--seconds 5] [--rounds 3] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.ports import free_port, wait_for_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

CONNECTIONS = (32, 4)
TARGET_RATIO = 0.8
TARGET_P99_MS = 5.0

# what a nodemanager sends every interval (nodemanager/agent.py), for node hb-00000.. in turn
BODY = (
    '{"node_id":"hb-%05d","labels":{"zone":"z1","os":"linux","arch":"x86_64"},'
    '"capacity":{"max_concurrent":4,"cpus":4.0,"memory_mb":8192},'
    '"info":{"hostname":"host","os":"linux","arch":"x86_64","agent_version":"1.0",'
    '"runtime":"process","cpus":4,"memory_bytes":8589934592},'
    '"active_runs":[],"run_attempts":{},'
    '"conditions":[{"type":"runtime","ok":true,"message":"process"},'
    '{"type":"workspace","ok":true,"message":"/tmp/ws is writable"},'
    '{"type":"disk","ok":true,"message":"51200 MiB free"}]}'
)
HEARTBEAT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('%(body)s', counter %% %(nodes)d)
  return wrk.format("POST", "/api/v1/nodes/heartbeat", {["Content-Type"]="application/json"}, body)
end
"""


def _wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "per_s": round(float(rate.group(1)) if rate else 0.0),
        "p50_ms": millis("50%"),
        "p99_ms": millis("99%"),
    }


def _register(base_url: str, nodes: int) -> None:
    """Every node heard once with the body the bench sends, so all of them are known."""
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        for i in range(nodes):
            client.post("/api/v1/nodes/heartbeat", content=BODY % i, headers=headers).raise_for_status()


@contextlib.contextmanager
def minimal_endpoint(tmp: Path) -> Iterator[int]:
    """The minimal Litestar upsert endpoint (bench/minimal_upsert.py) on a free port; its port."""
    port = free_port()
    command = [
        sys.executable,
        str(REPO_ROOT / "bench" / "minimal_upsert.py"),
        str(port),
        str(tmp / "minimal.db"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'apiserver.db'}"
        return
    with PostgresServer() as postgres:
        yield postgres.create_database("bench")


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "per_s": round(statistics.median(s["per_s"] for s in samples)),
        "p50_ms": round(statistics.median(s["p50_ms"] for s in samples), 3),
        "p99_ms": round(statistics.median(s["p99_ms"] for s in samples), 3),
        "rounds": [s["per_s"] for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/heartbeat.py needs wrk (apt-get install wrk)")
    # thousands of heartbeats a second over a few thousand ids: far past the per-node rate limit,
    # which this measures around (it is what a misbehaving node meets, not the ingest path)
    env = {"LOG_LEVEL": "WARNING", "HEARTBEAT_RATE_BURST": "1000000", "HEARTBEAT_RATE_PER_SECOND": "1000000"}
    result: dict[str, Any] = {"nodes": args.nodes, "database": args.database, "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "heartbeat.lua"
        script.write_text(HEARTBEAT_LUA % {"body": BODY, "nodes": args.nodes})
        with (
            _database(args.database, tmp) as database_url,
            ServerProcess({**env, "DATABASE_URL": database_url}, data_dir=tmp) as server,
            minimal_endpoint(tmp) as minimal_port,
        ):
            targets = {"apiserver": server.base_url, "minimal": f"http://127.0.0.1:{minimal_port}"}
            for url in targets.values():
                _register(url, args.nodes)
                _wrk(url + "/", 8, 1.0, script)  # warm-up: every node heard once, caches filled
            for connections in CONNECTIONS:
                samples: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, url in targets.items():
                        samples[name].append(_wrk(url + "/", connections, args.seconds, script))
                summary = {name: _summary(runs) for name, runs in samples.items()}
                summary["ratio"] = round(summary["apiserver"]["per_s"] / summary["minimal"]["per_s"], 3)
                result[f"c{connections}"] = summary
    result["targets"] = {
        "ratio_at_32": {"target": TARGET_RATIO, "met": result["c32"]["ratio"] >= TARGET_RATIO},
        "p99_ms_at_4": {"target": TARGET_P99_MS, "met": result["c4"]["apiserver"]["p99_ms"] < TARGET_P99_MS},
    }
    result["nodes_sustained_at_30s_interval"] = result["c32"]["apiserver"]["per_s"] * 30
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
