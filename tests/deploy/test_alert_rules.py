"""The alert rules in deploy/monitoring load in Prometheus as they are, and each one fires on the
series it is about (promtool, from Debian's prometheus package)."""

from __future__ import annotations

import re
import subprocess

from tests.support.ports import require_binary
from tests.support.server import REPO_ROOT

MONITORING = REPO_ROOT / "deploy" / "monitoring"


def test_promtool_accepts_the_rules() -> None:
    promtool = require_binary("promtool", "promtool (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_rule_has_a_test_that_makes_it_fire() -> None:
    promtool = require_binary("promtool", "promtool (apt-get install prometheus)")
    rules = set(re.findall(r"^\s+- alert: (\w+)", (MONITORING / "alerts.yml").read_text(), re.M))
    tests = (MONITORING / "alerts_test.yml").read_text()
    firing = {
        name
        for name, expected in re.findall(
            r"alertname: (\w+)\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\s+- interval|\Z)", tests, re.S
        )
        if expected.strip() != "[]"
    }
    assert rules == firing, f"rules without a firing test: {sorted(rules - firing)}"
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
