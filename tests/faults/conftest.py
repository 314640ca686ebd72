"""Fixtures of the fault suite: `faults`, one scenario's processes and ledger (see harness.py).

Every scenario's LEDGER CHECK is printed, attached to the report of a test that failed, and
listed once more, one line each, at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.check import ledger_check
from tests.faults.harness import Faults

SUMMARIES = pytest.StashKey[list[str]]()
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARIES] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    faults: Faults | None = getattr(item, "_faults", None)
    if report.when == "call" and report.failed and faults is not None and faults.report is not None:
        report.sections.append(("LEDGER CHECK", faults.report.text()))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summaries = config.stash.get(SUMMARIES, [])
    if summaries:
        terminalreporter.section("ledger checks")
        for line in summaries:
            terminalreporter.write_line(line)


@pytest.fixture
def faults(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Faults]:
    # the Docker scenarios ask for docker_client: set up before (so torn down after) the processes
    docker = request.getfixturevalue("docker_client") if "docker_client" in request.fixturenames else None
    world = Faults(tmp_path, request.node.name, docker)
    request.node._faults = world  # type: ignore[attr-defined]
    try:
        yield world
    finally:
        call = request.node.stash.get(REPORTS, {}).get("call")
        if world.report is None and call is not None and call.failed and world.apis:
            # failed before its check: the ledger as it stands, to tell what went wrong
            try:
                diagnostic = ledger_check(world.scenario, world.apis[0], world.ledger, world.nodes)
                request.node.add_report_section("teardown", "ledger check (diagnostic)", diagnostic.text())
            except Exception as exc:
                request.node.add_report_section("teardown", "ledger check (diagnostic)", f"failed: {exc!r}")
        if world.report is not None:
            request.config.stash[SUMMARIES].append(world.report.summary())
        world.close()
        if call is None or call.failed:
            for title, text in world.logs():
                request.node.add_report_section("teardown", title, text)
