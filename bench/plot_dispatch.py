"""Draw docs/dispatch.png from the JSON bench/dispatch.py printed (--output FILE).

    python bench/plot_dispatch.py RESULT.json [docs/dispatch.png]

Left: runs (tasks) per second of 200 runs of `true` on 4 slots, the platform with each queue
next to Celery and Dask from the same run. Right: CPU milliseconds per run of the apiserver and
of the submission path alone, against the 5 ms target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CPU_TARGET_MS = 5.0


def draw(result: dict[str, Any], target: Path) -> None:
    names: list[str] = []
    rates: list[float] = []
    for platform in result["platform"]:
        names.append(f"platform\n({platform['queue']} queue)")
        rates.append(platform["runs_per_s"])
    for baseline in ("celery", "dask"):
        if baseline in result:
            names.append({"celery": "Celery\nprefork -c 4", "dask": "Dask\ndistributed"}[baseline])
            rates.append(result[baseline]["tasks_per_s"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    colours = ["#2b6cb0"] * len(result["platform"]) + ["#a0aec0"] * (len(names) - len(result["platform"]))
    bars = left.bar(names, rates, color=colours)
    left.bar_label(bars, fmt="%.0f")
    left.set_ylim(0, max(rates, default=1.0) * 1.12)
    left.set_ylabel("runs of `true` per second")
    runs = result["platform"][0]["runs"] if result["platform"] else 0
    left.set_title(f"{runs} runs, one node, 4 slots (higher is better)")

    queues = [p["queue"] for p in result["platform"]]
    per_run = [p["cpu_ms_per_run"]["apiserver"] for p in result["platform"]]
    alone = {s["queue"]: s["cpu_ms_per_submission"]["apiserver"] for s in result.get("submissions_alone", [])}
    width = 0.38
    xs = range(len(queues))
    right.bar([x - width / 2 for x in xs], per_run, width, label="whole run", color="#2b6cb0")
    right.bar(
        [x + width / 2 for x in xs],
        [alone.get(q, 0.0) for q in queues],
        width,
        label="submission alone",
        color="#90cdf4",
    )
    right.axhline(CPU_TARGET_MS, color="#c53030", linestyle="--", label=f"target {CPU_TARGET_MS:g} ms")
    right.set_xticks(list(xs), [f"{q} queue" for q in queues])
    right.set_ylabel("apiserver CPU ms per run")
    right.set_title("apiserver CPU (lower is better)")
    right.set_ylim(0, max([CPU_TARGET_MS, *per_run, *alone.values()]) * 1.5)
    right.legend(fontsize="small", loc="upper center", ncol=2)
    figure.suptitle(f"bench/dispatch.py, {result['started']}, 2-core machine", fontsize="small")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main() -> int:
    source = Path(sys.argv[1])
    target = (
        Path(sys.argv[2])
        if len(sys.argv) > 2
        else Path(__file__).resolve().parent.parent / "docs" / "dispatch.png"
    )
    draw(json.loads(source.read_text()), target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
