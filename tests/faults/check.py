"""`ledger_check`, which ends every fault scenario (see harness.py for what it checks)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from tests.faults.ledger import ACTIVE, TERMINAL, Ledger, Submissions, overlapping
from tests.support.wait import eventually

if TYPE_CHECKING:
    from tests.faults.harness import Api, Node


# ------------------------------------------------------------------ the check


@dataclass
class LedgerReport:
    scenario: str
    lines: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = f"LEDGER CHECK {self.scenario}: {'OK' if self.ok else f'{len(self.problems)} PROBLEM(S)'}"
        body = [f"  {line}" for line in self.lines] + [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join([head, *body])

    def summary(self) -> str:
        return self.text().splitlines()[0] + " | " + " | ".join(self.lines[:2])


def _snapshot(api: Api, timeout: float = 10.0) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Runs and nodes as one consistent picture: runs, nodes, runs again, until both reads of
    the runs agree (a transition between them would make the counts disagree for a moment)."""

    def read() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None:
        try:
            before = api.runs()
            nodes = api.nodes()
            after = api.runs()
        except httpx.HTTPError:
            return None

        def key(runs: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
            return {rid: (run["status"], run["node_id"]) for rid, run in runs.items()}

        return (after, nodes) if key(before) == key(after) else None

    return eventually(read, timeout, 0.2, "a stable picture of runs and nodes")


def ledger_check(
    scenario: str,
    api: Api,
    ledger: Ledger,
    nodes: dict[str, Node],
    submissions: Submissions | None = None,
) -> LedgerReport:
    runs, node_rows = _snapshot(api)
    created = submissions.created if submissions is not None else []
    executions = ledger.executions()
    problems: list[str] = []
    lines: list[str] = []

    statuses = Counter(run["status"] for run in runs.values())
    lines.append(f"runs: {len(runs)} ({', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))})")

    missing = [run_id for run_id in created if run_id not in runs]
    problems += [f"run {run_id} was answered 201 but does not exist" for run_id in missing]

    # 1. terminal, or running on a live node that holds it
    still_running = []
    for run_id, run in sorted(runs.items()):
        if run["status"] in TERMINAL:
            continue
        node_id = run["node_id"]
        row = node_rows.get(node_id) if node_id else None
        holder = nodes.get(node_id) if node_id else None
        alive = row is not None and row["status"] != "offline" and holder is not None and holder.running
        if alive and holder is not None and holder.holds(run_id):
            still_running.append(run_id)
        else:
            where = f"on node {node_id} ({row['status'] if row else 'unknown'})" if node_id else "on no node"
            problems.append(f"run {run_id} is {run['status']} {where}, which does not run it")

    # 2. executions: never two at once, exactly one for a run that succeeded
    total = sum(len(e) for e in executions.values())
    doubled = 0
    for run_id, execs in sorted(executions.items()):
        if run_id not in runs:
            problems.append(f"an unknown run {run_id} executed {len(execs)} time(s)")
        for first, second in overlapping(execs):
            doubled += 1
            problems.append(
                f"run {run_id} executed twice at the same time: attempt {first.attempt} "
                f"({first.how or 'never ended'}) and attempt {second.attempt} ({second.how or 'never ended'})"
            )
    succeeded = [run for run in runs.values() if run["status"] == "succeeded"]
    for run in succeeded:
        execs = executions.get(run["id"], [])
        if len(execs) != 1 or execs[0].how != "end":
            problems.append(
                f"run {run['id']} succeeded but its command executed {len(execs)} time(s) "
                f"({[e.how or 'never ended' for e in execs]})"
            )
        elif execs[0].attempt != run["attempts"]:
            problems.append(
                f"run {run['id']} succeeded in attempt {run['attempts']} but its command ran as "
                f"attempt {execs[0].attempt}"
            )
    never = sum(1 for run in runs.values() if run["id"] not in executions)
    ended = Counter(e.how or "never said" for execs in executions.values() for e in execs)
    lines.append(
        f"executions: {total} recorded for {len(executions)} run(s) ({never} run(s) never executed); "
        f"two at once: {doubled}; succeeded runs executed exactly once: "
        f"{sum(1 for run in succeeded if len(executions.get(run['id'], [])) == 1)}/{len(succeeded)}; "
        f"ended: {', '.join(f'{how} {n}' for how, n in sorted(ended.items())) or '-'}"
    )
    if still_running:
        lines.append(f"still running on live nodes that hold them: {', '.join(still_running)}")
    if submissions is not None:
        lines.append(
            f"submissions: {submissions.summary()}; answered 201: {len(created)}, of which missing: "
            f"{len(missing)}; unexpected answers: {len(submissions.unexpected)}"
        )

    # 3. each node's `running` counts its active runs
    active = Counter(run["node_id"] for run in runs.values() if run["status"] in ACTIVE)
    counts = []
    for node_id, row in sorted(node_rows.items()):
        counts.append(f"{node_id} {row['status']} running={row['running']}/active={active[node_id]}")
        if row["running"] != active[node_id]:
            problems.append(
                f"node {node_id} counts running={row['running']} but has {active[node_id]} active run(s)"
            )
    lines.append("nodes: " + "; ".join(counts))
    return LedgerReport(scenario, lines, problems)
