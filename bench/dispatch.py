"""The run path end to end, against task queues, on this machine; prints one JSON document.

    python -m bench.dispatch [--runs 2000] [--queues memory,redis] [--baselines celery,dask]
                             [--docker-runs 40] [--timeout 300] [--profile DIR] [--output FILE]

Platform: a real apiserver (SQLite; the embedded queue, then Redis Streams) and one real
nodemanager on the process runtime with 4 slots; N runs of `true` submitted through
`POST /api/v1/runs` (8 keep-alive connections) until every one has succeeded. Reported: runs/s
(first submit to last success), submissions/s during that, submissions/s of a server with no
node (submission alone), and CPU per run of the apiserver, the nodemanager, and the run wrappers
with their commands (a cpuacct cgroup around the nodemanager, minus the daemon itself).

Baselines, in the same run (bench/baselines.py): Celery prefork -c 4 with a Redis broker and
result backend running `subprocess.run(["true"])`, Dask distributed (2 workers of 2 threads,
worker-saturation inf) running the same; the Docker runtime's containers per second on one
node next to a bare docker SDK run/remove loop.

`--profile DIR` runs the apiserver under cProfile (APISERVER_PROFILE) and writes one .prof per
queue there. The machine's load average is recorded: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import CpuGroup, CpuMeter, FastClient, load_average, process_cpu, submit_all
from tests.support.nodemanager import NodeManagerProcess
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

SLOTS = 4
WARM_UP = 20
TERMINAL = ("succeeded", "failed", "cancelled", "lost")


def progress(step: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}", file=sys.stderr, flush=True)


async def _count(client: FastClient, status: str) -> int:
    page = await client.json("GET", f"/api/v1/runs?status={status}&limit=1")
    return int(page["total"])


async def _wait_all_done(client: FastClient, expected: int, deadline: float) -> float:
    """Until `expected` runs succeeded; the monotonic time it was seen. Fails on any other end."""
    while True:
        succeeded = await _count(client, "succeeded")
        if succeeded >= expected:
            return time.monotonic()
        failed = await _count(client, "failed,cancelled,lost")
        if failed:
            raise RuntimeError(f"{failed} run(s) did not succeed")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {succeeded} of {expected} runs succeeded in time")
        await asyncio.sleep(0.05)


async def _wait_online(client: FastClient, node_id: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        status, data = await client.request("GET", f"/api/v1/nodes/{node_id}")
        if status == 200 and json.loads(data)["status"] == "online":
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"node {node_id} never came online")


def _bodies(count: int) -> list[dict[str, Any]]:
    return [{"image": "none", "command": ["true"]} for _ in range(count)]


def platform_run(queue: str, runs: int, timeout: float, profile_dir: Path | None) -> dict[str, Any]:
    redis = RedisServer().start() if queue == "redis" else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
            env = {"NODE_HEARTBEAT_INTERVAL": "5", "LOG_LEVEL": "WARNING"}
            if redis is not None:
                env["REDIS_URL"] = redis.url
            if profile_dir is not None:
                env["APISERVER_PROFILE"] = str(profile_dir / f"apiserver-{queue}.prof")
            with ServerProcess(env=env, data_dir=Path(tmp)) as server:
                node_env = {"RUNTIME": "process", "MAX_CONCURRENT": str(SLOTS), "LOG_LEVEL": "WARNING"}
                node = NodeManagerProcess(server.base_url, Path(tmp), "bench-node", node_env)
                group = CpuGroup("nodemanager")
                node.start()
                assert node.pid is not None
                group.add(node.pid)
                try:
                    return asyncio.run(_drive(server, node.pid, group, runs, timeout)) | {"queue": queue}
                finally:
                    node.stop()
                    group.close()
    finally:
        if redis is not None:
            redis.stop()


async def _drive(
    server: ServerProcess, node_pid: int, group: CpuGroup, runs: int, seconds: float
) -> dict[str, Any]:
    assert server.pid is not None
    server_pid = server.pid
    client = FastClient(server.port, connections=8)
    await client.open()
    try:
        await _wait_online(client, "bench-node", time.monotonic() + 30)
        await submit_all(client, _bodies(WARM_UP))
        await _wait_all_done(client, WARM_UP, time.monotonic() + 60)
        load_before = load_average()

        def wrappers() -> float | None:
            usage = group.usage()
            return None if usage is None else usage - process_cpu(node_pid)

        meter = CpuMeter(
            {
                "apiserver": lambda: process_cpu(server_pid),
                "nodemanager": lambda: process_cpu(node_pid),
                "wrappers": wrappers,
                "bench_client": time.process_time,
            }
        )
        meter.start()
        began = time.monotonic()
        _, submit_seconds = await submit_all(client, _bodies(runs))
        finished = await _wait_all_done(client, WARM_UP + runs, began + seconds)
        meter.stop()
    finally:
        await client.close()
    elapsed = finished - began
    return {
        "runs": runs,
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "submissions_per_s_during_run": round(runs / submit_seconds, 1),
        "cpu_ms_per_run": meter.per_item_ms(runs),
        "load_average": [load_before, load_average()],
    }


def submissions_alone(queue: str, runs: int) -> dict[str, Any]:
    """Submissions to a server with no node: the runs only queue and wait."""
    redis = RedisServer().start() if queue == "redis" else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
            env = {"LOG_LEVEL": "WARNING"} | ({"REDIS_URL": redis.url} if redis is not None else {})
            with ServerProcess(env=env, data_dir=Path(tmp)) as server:
                return asyncio.run(_submit_only(server, runs)) | {"queue": queue}
    finally:
        if redis is not None:
            redis.stop()


async def _submit_only(server: ServerProcess, runs: int) -> dict[str, Any]:
    assert server.pid is not None
    server_pid = server.pid
    client = FastClient(server.port, connections=8)
    await client.open()
    try:
        await submit_all(client, _bodies(WARM_UP))
        meter = CpuMeter({"apiserver": lambda: process_cpu(server_pid), "bench_client": time.process_time})
        meter.start()
        _, seconds = await submit_all(client, _bodies(runs))
        await asyncio.sleep(1.0)  # what the scheduler does with them belongs to their submission
        meter.stop()
    finally:
        await client.close()
    return {
        "runs": runs,
        "submissions_per_s": round(runs / seconds, 1),
        "cpu_ms_per_submission": meter.per_item_ms(runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--queues", default="memory,redis")
    parser.add_argument("--baselines", default="celery,dask", help="comma-separated; empty for none")
    parser.add_argument("--docker-runs", type=int, default=40, help="0 skips the Docker figure")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for each system's N runs")
    parser.add_argument("--profile", type=Path, help="directory for the apiserver's cProfile output")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "slots": SLOTS}
    result["load_average_start"] = load_average()
    queues = [q for q in args.queues.split(",") if q]
    result["platform"] = []
    result["submissions_alone"] = []
    for queue in queues:
        progress(f"platform, {queue} queue: {args.runs} runs")
        result["platform"].append(platform_run(queue, args.runs, args.timeout, args.profile))
        progress(f"  {result['platform'][-1]['runs_per_s']} runs/s")
        result["submissions_alone"].append(submissions_alone(queue, args.runs))
    from bench import baselines

    for name in [b for b in args.baselines.split(",") if b]:
        progress(f"baseline {name}: {args.runs} tasks")
        result[name] = baselines.run(name, args.runs, args.timeout)
        progress(f"  {result[name]['tasks_per_s']} tasks/s")
    if args.docker_runs:
        progress(f"docker: {args.docker_runs} runs")
        result["docker"] = baselines.docker_figure(args.docker_runs, args.timeout)
    result["ratios"] = _ratios(result)
    result["load_average_end"] = load_average()
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    ratios = {}
    celery = result.get("celery", {}).get("tasks_per_s")
    for platform in result["platform"]:
        if celery:
            ratios[f"{platform['queue']}_vs_celery"] = round(platform["runs_per_s"] / celery, 2)
    return ratios


if __name__ == "__main__":
    sys.exit(main())
