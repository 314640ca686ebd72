"""nodectl start-up cost, printed as JSON.

1. cold start of `nodectl --help` (a new interpreter each time, no server);
2. `nodectl nodes list -o json` against a real apiserver seeded with NODES nodes via heartbeats.

Targets: --help under 0.3 s, listing 10,000 nodes under 1 s (medians).

    python bench/cli_startup.py [--nodes 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nodeapi import models as m  # noqa: E402
from nodeapi.client import Calls, Client  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

HELP_TARGET_S = 0.3
LIST_TARGET_S = 1.0


def timed(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True
        )
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "median_s": round(statistics.median(samples), 4),
        "p90_s": round(samples[min(len(samples) - 1, int(0.9 * len(samples)))], 4),
        "min_s": round(samples[0], 4),
        "runs": runs,
    }


def seed(base_url: str, count: int) -> float:
    start = time.perf_counter()

    def beat(chunk: range) -> None:
        with Client(base_url) as client:
            for i in chunk:
                client.send(
                    Calls.heartbeat(
                        m.HeartbeatRequest(
                            node_id=f"bench-{i:05d}",
                            labels={"zone": f"z{i % 4}", "gpu": str(i % 2 == 0).lower()},
                            capacity=m.Capacity(max_concurrent=4),
                        )
                    )
                )

    workers = 8
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(beat, [range(w, count, workers) for w in range(workers)]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("NODECTL_")}
    env["XDG_CONFIG_HOME"] = str(REPO_ROOT / ".bench-nodectl-config-unused")
    nodectl = [sys.executable, "-m", "nodectl"]
    baseline = timed([sys.executable, "-c", "pass"], env, args.runs)
    help_stats = timed([*nodectl, "--help"], env, args.runs)

    # NODE_OFFLINE_AFTER is generous so no node turns offline while seeding
    with ServerProcess(env={"NODE_OFFLINE_AFTER": "3600"}) as server:
        seed_s = seed(server.base_url, args.nodes)
        listed = subprocess.run(
            [*nodectl, "--server", server.base_url, "nodes", "list", "-o", "json"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        count = len(json.loads(listed.stdout)["items"])
        list_stats = timed(
            [*nodectl, "--server", server.base_url, "nodes", "list", "-o", "json"], env, args.runs
        )
        table_stats = timed([*nodectl, "--server", server.base_url, "nodes", "list"], env, args.runs)

    print(
        json.dumps(
            {
                "python_baseline": baseline,
                "help": {
                    **help_stats,
                    "target_s": HELP_TARGET_S,
                    "ok": help_stats["median_s"] < HELP_TARGET_S,
                },
                "nodes_list_json": {
                    **list_stats,
                    "nodes": count,
                    "target_s": LIST_TARGET_S,
                    "ok": count == args.nodes and list_stats["median_s"] < LIST_TARGET_S,
                },
                "nodes_list_plain_table": {**table_stats, "nodes": count},
                "seed_s": round(seed_s, 2),
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
