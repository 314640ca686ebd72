"""Heartbeat throughput of one apiserver process (SQLite), next to its own /healthz in the same run.

A heartbeat is the server's hottest write path: 10,000 nodes at the default 30 s interval send
333 a second. This starts a real apiserver, registers NODES nodes, then drives heartbeats of
registered nodes with `wrk` (Debian package wrk; a Python client saturates before the server
does) for a bounded time, and /healthz (no database) the same way as the peer. Prints JSON.

    python bench/heartbeat.py [--nodes 2000] [--connections 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.server import ServerProcess  # noqa: E402

HEARTBEAT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"node_id":"hb-%%05d","labels":{"zone":"z1"},"capacity":{"max_concurrent":4},"active_runs":[]}',
    counter %% %(nodes)d)
  return wrk.format("POST", "/api/v1/nodes/heartbeat", {["Content-Type"]="application/json"}, body)
end
"""


def _wrk(url: str, connections: int, seconds: float, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True, timeout=seconds + 30)
    out = done.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error answers:\n{out}")

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    per_s = round(float(rate.group(1)) if rate else 0.0)
    return {"per_s": per_s, "p50_ms": millis("50%"), "p99_ms": millis("99%")}


def _register(base_url: str, nodes: int) -> None:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        for i in range(nodes):
            body = {"node_id": f"hb-{i:05d}", "labels": {"zone": "z1"}, "capacity": {"max_concurrent": 4}}
            client.post("/api/v1/nodes/heartbeat", json=body).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/heartbeat.py needs wrk (apt-get install wrk)")
    # thousands of heartbeats a second over a few thousand ids: far past the per-node rate limit,
    # which this measures around (it is what a misbehaving node meets, not the ingest path)
    unlimited = {"HEARTBEAT_RATE_BURST": "1000000", "HEARTBEAT_RATE_PER_SECOND": "1000000"}
    with (
        ServerProcess({"LOG_LEVEL": "WARNING", **unlimited}) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        _register(server.base_url, args.nodes)
        script = Path(tmp) / "heartbeat.lua"
        script.write_text(HEARTBEAT_LUA % {"nodes": args.nodes})
        heartbeat = _wrk(server.base_url + "/", args.connections, args.seconds, script)
        healthz = _wrk(server.base_url + "/healthz", args.connections, args.seconds, None)
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "connections": args.connections,
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
