"""One distribution split by extras: what each program needs, and what it says when that is missing.

The bare install itself (a fresh venv, real dependencies from the index) is in test_packaging.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nodeapi.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# distributions whose import name differs from their name, and the optional ones
IMPORT_NAMES = {
    "pydantic-settings": "pydantic_settings",
    "swagger-ui-bundle": "swagger_ui_bundle",
    "prometheus-client": "prometheus_client",
}
OPTIONAL = {"uvloop", "httptools"}  # the apiserver falls back to asyncio and h11
SERVER_ONLY = ("litestar", "sqlalchemy", "sqlmodel", "alembic", "asyncpg", "aiosqlite", "uvicorn", "redis")
# metrics and structured logs (nodeapi.logs) are the apiserver's and the nodemanager's, not the CLI's
NOT_IN_THE_CLI = (*SERVER_ONLY, "docker", "pydantic_settings", "prometheus_client", "structlog")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_extra_modules_follow_pyproject() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in EXTRA_MODULES.items():
        declared = {IMPORT_NAMES.get(name, name) for name in _names(extras[extra])} - OPTIONAL
        assert declared == set(modules), extra
    assert extras["all"] == ["agent-nodes[server,node]"]
    assert "agent-nodes[all]" in extras["dev"]


def test_the_bare_distribution_holds_none_of_the_server_or_node_packages() -> None:
    bare = _names(PYPROJECT["project"]["dependencies"])
    assert not bare & {
        *SERVER_ONLY, "docker", "pydantic-settings", "cryptography", "prometheus-client", "structlog"
    }  # fmt: skip


def test_nodectl_imports_no_server_or_node_package(tmp_path: Path) -> None:
    """Every command module of the CLI loaded (help of each), and the client used: none of them
    pulls in a server or node package."""
    script = f"""
import sys
from typer.testing import CliRunner
from nodectl.app import app
from nodeapi.client import Client, Calls
runner = CliRunner()
for args in (["--help"], ["nodes", "list", "--help"], ["runs", "submit", "--help"], ["env", "set", "--help"],
             ["context", "--help"], ["audit", "--help"], ["version", "--client"]):
    assert runner.invoke(app, args, env={{"XDG_CONFIG_HOME": {str(tmp_path)!r}}}).exit_code == 0, args
import nodectl.bulk, nodectl.drain, nodectl.edit, nodectl.follow, nodectl.watch, nodectl.views
print(" ".join(sorted({{name.split(".")[0] for name in sys.modules}})))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert not loaded & set(NOT_IN_THE_CLI)


def _poisoned_env(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment whose Python cannot import `module`, as if its extra were not installed."""
    (tmp_path / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        (["-m", "server"], "litestar", "server"),
        (["-m", "server", "migrate"], "sqlalchemy", "server"),
        (["-m", "nodemanager"], "docker", "node"),
        (["-m", "nodemanager", "--help"], "pydantic_settings", "node"),
        (["-m", "server", "check-config"], "prometheus_client", "server"),
        (["-m", "nodemanager"], "structlog", "node"),
        ("apiserver", "uvicorn", "server"),
        ("nodemanager", "docker", "node"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_pip_command(
    tmp_path: Path, command: list[str] | str, module: str, extra: str
) -> None:
    argv = (
        [str(Path(sys.executable).parent / command)]
        if isinstance(command, str)
        else [sys.executable, *command]
    )
    result = subprocess.run(
        argv,
        cwd=tmp_path,
        env=_poisoned_env(tmp_path, module),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no module named {module!r}" in result.stderr
    assert f"pip install 'agent-nodes[{extra}]'" in result.stderr
