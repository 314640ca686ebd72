"""Scheduler benchmark; prints one JSON document.

    python bench/placement.py [--nodes 1000] [--runs 10000]

Measures: end-to-end placements/s (queue -> place -> SQLite apply -> commit -> ack) on the
in-process queue and, when redis-server is installed, on Redis Streams, at --nodes and at
10 times as many; the pure place() cost per placement at 100 / 1,000 / 10,000 nodes, both
from scratch and with a kept Placer (as the scheduler places consecutive batches); paced
queue-to-assignment latency; and a raw redis-py XREADGROUP + XACK loop on the same machine,
as a yardstick. The machine's load average is recorded: figures from a busy machine are
pessimistic, ratios within one run are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.queue import MemoryQueue, RunQueue
from server.queue.redis import RedisStreamsQueue
from server.scheduler.loop import Scheduler
from server.scheduler.placement import NodeSnapshot, PendingRun, Placer, place
from server.scheduler.selectors import compile_selector
from tests.support.redis import RedisServer
from tests.support.scheduler_db import NODES, RUNS, fresh_engine, insert_rows, node_row, run_row

# every run requests resources and every node has them, so placement checks the fit each time
RUN_CPU_MILLIS = 500
RUN_MEMORY_MB = 1024
SELECTORS = [({}, ()), ({"gpu": "true"}, ()), ({}, ("rack in (r1,r2,r3)",)), ({"os": "linux"}, ("!spot",))]


def progress(step: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}", file=sys.stderr, flush=True)


def labels_of(i: int) -> dict[str, str]:
    labels = {"os": "linux", "rack": f"r{i % 10}", "gpu": "true" if i % 4 == 0 else "false"}
    if i % 7 == 0:
        labels["spot"] = "yes"
    return labels


def pure_place_cost(node_counts: list[int], batch: int, rounds: int) -> list[dict[str, Any]]:
    results = []
    runs = bench_runs(batch)
    for count in node_counts:
        nodes = bench_nodes(count)
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            decisions = place(runs, nodes)
            timings.append(time.perf_counter() - started)
        assert len(decisions) == batch
        best = min(timings)
        results.append({"nodes": count, "batch": batch, "us_per_placement": round(best / batch * 1e6, 2)})
    return results


def kept_placer_cost(node_counts: list[int], batch: int, batches: int, rounds: int) -> list[dict[str, Any]]:
    """Consecutive batches on one Placer, the first one (which builds it) not counted; best round."""
    results = []
    runs = bench_runs(batch)
    for count in node_counts:
        nodes = bench_nodes(count)
        timings = []
        for _ in range(rounds):
            placer = Placer(nodes)
            placer.place(runs)
            started = time.perf_counter()
            for _ in range(batches):
                decisions = placer.place(runs)
            timings.append(time.perf_counter() - started)
            assert all(type(d).__name__ == "Assign" for d in decisions)
        per_placement = min(timings) / (batch * batches)
        results.append({"nodes": count, "batch": batch, "us_per_placement": round(per_placement * 1e6, 2)})
    return results


def bench_runs(count: int) -> list[PendingRun]:
    return [
        PendingRun(
            f"r{i}",
            compile_selector(*SELECTORS[i % len(SELECTORS)]),
            frozenset(),
            RUN_CPU_MILLIS,
            RUN_MEMORY_MB,
        )
        for i in range(count)
    ]


def bench_nodes(count: int) -> list[NodeSnapshot]:
    # room for a kept placer's many batches: 64 slots and the CPUs and memory for far more
    return [
        NodeSnapshot(
            f"n{i:05}",
            labels_of(i),
            i % 3,
            64,
            "online",
            10**6,
            10**7,
            (i % 3) * RUN_CPU_MILLIS,
            (i % 3) * RUN_MEMORY_MB,
        )
        for i in range(count)
    ]


async def seed(engine: AsyncEngine, nodes: int, runs: int, max_concurrent: int) -> list[str]:
    node_rows = [
        node_row(
            f"n{i:05}",
            max_concurrent=max_concurrent,
            labels=labels_of(i),
            cpu_millis=max_concurrent * RUN_CPU_MILLIS,
            memory_mb=max_concurrent * RUN_MEMORY_MB,
        )
        for i in range(nodes)
    ]
    for start in range(0, nodes, 500):
        await insert_rows(engine, NODES, node_rows[start : start + 500])
    return await seed_runs(engine, runs)


async def seed_runs(engine: AsyncEngine, runs: int) -> list[str]:
    run_ids = [f"run-{i:06}" for i in range(runs)]
    for start in range(0, runs, 1000):
        await insert_rows(
            engine,
            RUNS,
            [
                run_row(run_id, age=1.0, cpu_millis=RUN_CPU_MILLIS, memory_mb=RUN_MEMORY_MB)
                for run_id in run_ids[start : start + 1000]
            ],
        )
    return run_ids


def scheduler_for(engine: AsyncEngine, queue: RunQueue, on_assigned: Any = None) -> Scheduler:
    return Scheduler(
        engine,
        queue,
        offline_after=600,
        block=0.2,
        recheck_interval=3600,
        rescan_interval=3600,
        outbox_interval=3600,
        reclaim_interval=3600,
        on_assigned=on_assigned,
    )


async def end_to_end(queue: RunQueue, workdir: Path, nodes: int, runs: int) -> dict[str, Any]:
    """Runs reach the scheduler through the queue only: it is started (and its start-up rescan
    is over) before the run rows are written and published, as the runs API does for a burst."""
    engine = await fresh_engine(f"sqlite:///{workdir / f'e2e-{time.monotonic_ns()}.db'}")
    # selector-free runs so every run fits: this measures throughput, not rejection
    await seed(engine, nodes, 0, max_concurrent=-(-runs // nodes) + 1)
    await queue.start()
    all_assigned = asyncio.Event()

    def on_assigned(_: list[tuple[str, str]]) -> None:
        if scheduler.stats.assigned >= runs:
            all_assigned.set()

    scheduler = scheduler_for(engine, queue, on_assigned)
    await scheduler.start()
    await asyncio.sleep(0.3)  # past the start-up rescan
    run_ids = await seed_runs(engine, runs)
    started, cpu_started = time.perf_counter(), time.process_time()
    await queue.publish(run_ids)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_assigned.wait(), 60)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await scheduler.stop()
    await queue.close()
    await engine.dispose()
    return {
        "nodes": nodes,
        "runs": runs,
        "assigned": scheduler.stats.assigned,
        "seconds": round(elapsed, 3),
        "placements_per_s": round(scheduler.stats.assigned / elapsed),
        # this process only (publish included, redis-server not): less sensitive to machine load
        "cpu_us_per_placement": round(cpu / max(scheduler.stats.assigned, 1) * 1e6),
        "passes": scheduler.stats.passes,
    }


async def paced_latency(
    queue: RunQueue, workdir: Path, nodes: int, rate: float, count: int
) -> dict[str, Any]:
    engine = await fresh_engine(f"sqlite:///{workdir / f'lat-{time.monotonic_ns()}.db'}")
    await seed(engine, nodes, 0, max_concurrent=4)
    published: dict[str, float] = {}
    latencies: list[float] = []
    all_assigned = asyncio.Event()

    def on_assigned(pairs: list[tuple[str, str]]) -> None:
        now = time.perf_counter()
        latencies.extend(now - published[run_id] for run_id, _ in pairs)
        if len(latencies) >= count:
            all_assigned.set()

    await queue.start()
    scheduler = scheduler_for(engine, queue, on_assigned)
    await scheduler.start()
    await asyncio.sleep(0.3)  # past the start-up rescan
    for i in range(count):
        # as the runs API does: commit the row, then publish its id
        run_id = f"paced-{i:05}"
        await insert_rows(
            engine, RUNS, [run_row(run_id, age=0.0, cpu_millis=RUN_CPU_MILLIS, memory_mb=RUN_MEMORY_MB)]
        )
        published[run_id] = time.perf_counter()
        await queue.publish([run_id])
        await asyncio.sleep(1 / rate)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_assigned.wait(), 10)
    await scheduler.stop()
    await queue.close()
    await engine.dispose()
    ordered = sorted(latencies)
    return {
        "rate_per_s": rate,
        "runs": count,
        "measured": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


async def raw_redis_loop(url: str, messages: int, count: int) -> dict[str, Any]:
    redis = Redis.from_url(url, decode_responses=True)
    key = "bench:raw"
    await redis.xgroup_create(key, "g", id="0", mkstream=True)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(messages):
            pipe.xadd(key, {"run_id": f"run-{i}"})
        await pipe.execute()
    done = 0
    started = time.perf_counter()
    while done < messages:
        reply: Any = await redis.xreadgroup("g", "c", {key: ">"}, count=count, block=100)
        entries = reply[0][1]
        await redis.xack(key, "g", *[entry_id for entry_id, _ in entries])
        done += len(entries)
    elapsed = time.perf_counter() - started
    await redis.aclose()
    return {"messages": messages, "count": count, "messages_per_s": round(messages / elapsed)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10000)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "load_average_at_start": os.getloadavg(),
        "run_requests": {"cpu_millis": RUN_CPU_MILLIS, "memory_mb": RUN_MEMORY_MB},
    }
    report["pure_place"] = pure_place_cost([100, 1000, 10000], batch=256, rounds=5)
    report["pure_place_large_batch"] = pure_place_cost([100, 1000, 10000], batch=5000, rounds=2)
    report["kept_placer"] = kept_placer_cost([100, 1000, 10000], batch=256, batches=10, rounds=3)
    for key in ("pure_place", "kept_placer"):
        first, last = report[key][0], report[key][-1]
        report[f"{key}_growth_100x_nodes"] = round(last["us_per_placement"] / first["us_per_placement"], 1)
    scaled = args.nodes * 10
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        workdir = Path(tmp)
        progress("end to end, in-process queue")
        report["end_to_end_memory"] = await end_to_end(MemoryQueue(), workdir, args.nodes, args.runs)
        progress("paced latency, in-process queue")
        report["latency_memory"] = await paced_latency(MemoryQueue(), workdir, args.nodes, 200, 400)
        if shutil.which("redis-server"):
            with RedisServer() as server:
                progress("end to end, Redis")
                queue = RedisStreamsQueue(server.url, "bench:runs")
                report["end_to_end_redis"] = await end_to_end(queue, workdir, args.nodes, args.runs)
                progress(f"end to end, Redis, {scaled} nodes")
                queue = RedisStreamsQueue(server.url, "bench:runs-scaled")
                report["end_to_end_redis_10x_nodes"] = await end_to_end(queue, workdir, scaled, args.runs)
                queue = RedisStreamsQueue(server.url, "bench:latency")
                progress("paced latency, Redis")
                report["latency_redis"] = await paced_latency(queue, workdir, args.nodes, 200, 400)
                progress("raw redis-py loop")
                report["raw_redis_xreadgroup_xack"] = await raw_redis_loop(server.url, args.runs, 256)
            raw = report["raw_redis_xreadgroup_xack"]["messages_per_s"]
            redis_e2e, redis_scaled = report["end_to_end_redis"], report["end_to_end_redis_10x_nodes"]
            report["ratio_scheduler_redis_to_raw_redis"] = round(redis_e2e["placements_per_s"] / raw, 3)
            report["ratio_scheduler_redis_to_memory"] = round(
                redis_e2e["placements_per_s"] / report["end_to_end_memory"]["placements_per_s"], 3
            )
            report["cpu_per_placement_growth_10x_nodes"] = round(
                redis_scaled["cpu_us_per_placement"] / redis_e2e["cpu_us_per_placement"], 2
            )
    report["target_placements_per_s_at_1000_nodes"] = 3750
    report["meets_target"] = report["end_to_end_memory"]["placements_per_s"] >= 3750
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
