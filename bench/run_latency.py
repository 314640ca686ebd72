"""Run start latency: submit -> container started and submit -> finished, next to a bare `docker run --rm`.

Starts a real apiserver and one real nodemanager (Docker runtime, local test image, no pull),
submits runs of `true` one at a time and reads the server's `started_at` / `finished_at`.
Prints JSON. Usage: python -m bench.run_latency [--runs 50] [--bare 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docker

from tests.support.docker import remove_test_containers
from tests.support.images import ensure_test_image
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess

TARGET_P99_STARTED = 2.0
TERMINAL = {"succeeded", "failed", "cancelled", "lost"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 4),
        "p99": round(percentile(values, 99), 4),
        "mean": round(statistics.fmean(values), 4),
        "max": round(max(values), 4),
    }


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def measure_runs(server: ServerProcess, image: str, count: int) -> tuple[list[float], list[float]]:
    started: list[float] = []
    finished: list[float] = []
    with server.client() as http:
        for _ in range(count):
            submitted = time.time()
            response = http.post("/api/v1/runs", json={"image": image, "command": ["true"]})
            response.raise_for_status()
            run_id = response.json()["id"]
            run: dict[str, Any] = response.json()
            deadline = time.monotonic() + 60
            while run["status"] not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.01)
                run = http.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] != "succeeded" or not run["started_at"] or not run["finished_at"]:
                raise RuntimeError(f"run {run_id} did not succeed: {run}")
            started.append(_ts(run["started_at"]) - submitted)
            finished.append(_ts(run["finished_at"]) - submitted)
    return started, finished


def measure_bare(image: str, count: int) -> list[float]:
    cli = shutil.which("docker")
    if cli is None:
        raise RuntimeError("the docker CLI is needed for the bare baseline")
    durations: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        subprocess.run(
            [cli, "run", "--rm", "--network", "none", "--label", "agentnodes.test=1", image, "true"],
            check=True,
            capture_output=True,
        )
        durations.append(time.perf_counter() - began)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--bare", type=int, default=20)
    args = parser.parse_args()
    client = docker.from_env()
    image = ensure_test_image(client)
    remove_test_containers(client)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        with ServerProcess(env={"NODE_HEARTBEAT_INTERVAL": "2"}, data_dir=workdir) as server:
            node = NodeManagerProcess(server.base_url, workdir, "bench-node", {"LOG_LEVEL": "WARNING"})
            node.start()
            try:
                _wait_online(server, "bench-node")
                measure_runs(server, image, 3)  # warm-up: imports, first container of the image
                started, finished = measure_runs(server, image, args.runs)
            finally:
                node.stop()
    bare = measure_bare(image, args.bare)
    remove_test_containers(client)
    result = {
        "runs": args.runs,
        "image": image,
        "submit_to_started_s": summary(started),
        "submit_to_finished_s": summary(finished),
        "bare_docker_run_rm_s": summary(bare),
        "ratio_finished_to_bare_p50": round(percentile(finished, 50) / percentile(bare, 50), 2),
        "target_p99_started_s": TARGET_P99_STARTED,
        "target_met": percentile(started, 99) <= TARGET_P99_STARTED,
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _wait_online(server: ServerProcess, node_id: str) -> None:
    with server.client() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = http.get(f"/api/v1/nodes/{node_id}")
            if response.status_code == 200 and response.json()["status"] == "online":
                return
            time.sleep(0.1)
    raise RuntimeError(f"node {node_id} never came online")


if __name__ == "__main__":
    sys.exit(main())
