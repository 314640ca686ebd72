"""The console's node page at fleet size, printed as JSON.

Starts a real apiserver on SQLite, seeds NODES node rows straight into its database, and loads
the node page in Debian's chromium (Playwright) RUNS times, each in a fresh browser context:
`render_ms` is when the first page of cards was on screen, in ms since the navigation started
(the page's `console:nodes-rendered` performance mark). Then it drains and undrains one node on
the page through the API, `LIVE` times: `live_ms` is from sending the PATCH to its card showing
the new status, which arrives over the live node stream (no list request is made).

Target: render under 1 s (tests/console/test_console_fleet.py asserts that bound too).

    python bench/console_render.py [--nodes 10000] [--runs 7] [--live 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.console.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support import db  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TARGET_MS = 1000.0
CARD = '.node-card[data-node-id="{}"]'


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def measure(nodes: int, runs: int, live: int, data_dir: Path) -> dict[str, Any]:
    database_url = f"sqlite:///{data_dir / 'apiserver.db'}"
    env = {"DATABASE_URL": database_url, "NODE_OFFLINE_AFTER": "3600", "LOG_LEVEL": "WARNING"}
    with ServerProcess(env=env, data_dir=data_dir) as server:
        db.insert_nodes(database_url, nodes)
        with server.client(timeout=60.0) as client, sync_playwright() as playwright:
            client.get("/api/v1/nodes", params={"limit": 50}).raise_for_status()  # warm the server
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            renders: list[float] = []
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(f"{server.base_url}/#/nodes")
                page.wait_for_selector(".node-card")
                renders.append(
                    page.evaluate("performance.getEntriesByName('console:nodes-rendered')[0].startTime")
                )
                context.close()
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{server.base_url}/#/nodes")
            page.wait_for_selector('#live-state[data-live="true"]')
            fetched: list[str] = []

            def on_request(request: Any) -> None:
                if "/api/v1/nodes?" in request.url:
                    fetched.append(request.url)

            page.on("request", on_request)
            target = "node-00003"
            latencies: list[float] = []
            for i in range(live):
                status = "draining" if i % 2 == 0 else "online"
                started = time.perf_counter()
                client.patch(f"/api/v1/nodes/{target}", json={"status": status}).raise_for_status()
                page.wait_for_selector(f'{CARD.format(target)}[data-status="{status}"]')
                latencies.append((time.perf_counter() - started) * 1000)
            list_requests = len(fetched)
            context.close()
            browser.close()
    render = summary(renders)
    return {
        "render": {
            **render,
            "runs": runs,
            "target_ms": TARGET_MS,
            "target_met": render["median_ms"] < TARGET_MS,
        },
        "live": {**summary(latencies), "changes": live, "list_requests_meanwhile": list_requests},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--live", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        result: dict[str, Any] = {"nodes": args.nodes, **measure(args.nodes, args.runs, args.live, Path(tmp))}
    result["cpus"] = os.cpu_count()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
