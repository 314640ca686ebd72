"""How quickly the apiserver reacts on the node channel, printed as JSON.

1. Wake-up: a node waits in `GET /nodes/{id}/work?wait=15`; a run is submitted; how long from the
   submit until that waiting poll answers with the run (submit -> queue -> scheduler -> commit ->
   in-process wake-up -> answer). On the in-process queue and, when redis-server is installed, on
   Redis Streams. Target: p99 under 1 s.
2. Offline: a node sends one heartbeat and falls silent, NODE_OFFLINE_AFTER=2; how long from the
   heartbeat's answer until the API shows it offline, read from `GET /nodes/{id}` (the status
   rule in Python) and from `GET /nodes?status=offline` (its SQL form), polled every 20 ms.
   Target: at most 3.5 s (the threshold plus 1.5 s).

The functional tests (tests/server/test_run_lifecycle.py, tests/server/test_api_nodes.py) check
that the poll wakes and the node goes offline, not how fast.

    python bench/node_channel.py [--wakeups 30] [--offline 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nodeapi import models as m  # noqa: E402
from nodeapi.client import Calls, Client  # noqa: E402
from tests.support.fake_node import FakeNode  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

WAKEUP_TARGET_P99_S = 1.0
OFFLINE_AFTER = 2.0
OFFLINE_TARGET_S = 3.5
POLL_WAIT = 15.0
SETTLE = 0.3  # seconds for a started poll to reach the server and wait there


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(percentile(values, 50), 4),
        "p99_s": round(percentile(values, 99), 4),
        "mean_s": round(statistics.fmean(values), 4),
        "max_s": round(max(values), 4),
    }


def wait_for_work(node: FakeNode, answers: list[tuple[float, m.WorkResponse]]) -> None:
    work = node.poll(wait=POLL_WAIT)
    answers.append((time.perf_counter(), work))


def wakeups(queue_env: dict[str, str], count: int) -> dict[str, Any]:
    env = {**queue_env, "NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60", "LOG_LEVEL": "WARNING"}
    latencies: list[float] = []
    with ServerProcess(env=env) as server, Client(server.base_url) as api, Client(server.base_url) as wire:
        node = FakeNode(wire, "bench-waiter", max_concurrent=2)
        node.heartbeat()
        for _ in range(count + 1):  # the first one warms up
            node.heartbeat()  # stays online however many runs are measured
            answers: list[tuple[float, m.WorkResponse]] = []
            poller = threading.Thread(target=wait_for_work, args=(node, answers))
            poller.start()
            time.sleep(SETTLE)  # bench pacing: the poll is waiting on the server by now
            submitted = time.perf_counter()
            run = api.send(Calls.create_run(m.RunCreate(image="busybox", command=["true"])))
            poller.join(POLL_WAIT + 5)
            if not answers:
                raise RuntimeError("the work poll never answered")
            answered_at, work = answers[0]
            if [a.run.id for a in work.assignments] != [run.id]:
                raise RuntimeError(f"the poll answered {work.assignments}, not run {run.id}")
            latencies.append(answered_at - submitted)
            node.start(run.id)
            node.report(run.id, ("exited", {"exit_code": 0}))
    measured = latencies[1:]
    return {
        "runs": len(measured),
        **summary(measured),
        "target_p99_s": WAKEUP_TARGET_P99_S,
        "target_met": percentile(measured, 99) < WAKEUP_TARGET_P99_S,
    }


def status_of(http: Any, node_id: str) -> str:
    return str(http.get(f"/api/v1/nodes/{node_id}").json()["status"])


def offline(count: int) -> dict[str, Any]:
    env = {"NODE_HEARTBEAT_INTERVAL": "0.5", "NODE_OFFLINE_AFTER": str(OFFLINE_AFTER), "LOG_LEVEL": "WARNING"}
    single: list[float] = []
    listed: list[float] = []
    with ServerProcess(env=env) as server, server.client() as http:
        for i in range(count):
            node_id = f"bench-silent-{i}"
            body = {"node_id": node_id, "labels": {}, "capacity": {"max_concurrent": 1}}
            http.post("/api/v1/nodes/heartbeat", json=body).raise_for_status()
            beaten = time.perf_counter()
            seen: dict[str, float] = {}
            deadline = beaten + OFFLINE_AFTER + 30
            while len(seen) < 2 and time.perf_counter() < deadline:
                if "single" not in seen and status_of(http, node_id) == "offline":
                    seen["single"] = time.perf_counter() - beaten
                if "listed" not in seen:
                    page = http.get("/api/v1/nodes", params={"status": "offline", "limit": 10_000}).json()
                    if node_id in {n["id"] for n in page["items"]}:
                        seen["listed"] = time.perf_counter() - beaten
                time.sleep(0.02)
            if len(seen) < 2:
                raise RuntimeError(f"{node_id} never showed offline: {seen}")
            single.append(seen["single"])
            listed.append(seen["listed"])
    return {
        "nodes": count,
        "offline_after_s": OFFLINE_AFTER,
        "get_node": summary(single),
        "status_filter": summary(listed),
        "target_s": OFFLINE_TARGET_S,
        "target_met": max(single + listed) <= OFFLINE_TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakeups", type=int, default=30)
    parser.add_argument("--offline", type=int, default=5)
    args = parser.parse_args()
    result: dict[str, Any] = {"wakeup": {"in_process_queue": wakeups({}, args.wakeups)}}
    if shutil.which("redis-server"):
        with RedisServer() as redis:
            result["wakeup"]["redis_streams"] = wakeups({"REDIS_URL": redis.url}, args.wakeups)
    else:
        result["wakeup"]["redis_streams"] = "skipped: no redis-server"
    result["offline"] = offline(args.offline)
    result["cpus"] = os.cpu_count()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
