"""The distribution as users get it: `python -m build` makes a wheel and an sdist that `twine check`
accepts, and the bare wheel (no extra), installed into a fresh venv with its real dependencies from
the package index, is nodectl alone: no server or node package, and the apiserver and nodemanager
exit 2 with the pip command that adds them."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeapi import __version__
from tests.test_extras import NOT_IN_THE_CLI

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SERVER_DISTRIBUTIONS = {
    "litestar", "sqlalchemy", "sqlmodel", "alembic", "asyncpg", "aiosqlite", "uvicorn", "redis", "docker",
    "pydantic-settings", "prometheus-client", "structlog",
}  # fmt: skip


def run(*command: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def dist() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agent-nodes-dist-") as out:
        built = run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=ROOT, timeout=600)
        assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
        yield Path(out)


@pytest.mark.timeout(600)
def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist: Path) -> None:
    wheel = dist / f"agent_nodes-{__version__}-py3-none-any.whl"
    sdist = dist / f"agent_nodes-{__version__}.tar.gz"
    made = sorted(path.name for path in dist.iterdir())
    assert made == sorted([wheel.name, sdist.name])
    checked = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


@pytest.mark.timeout(600)
def test_the_bare_distribution_is_the_cli_alone(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    assert run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    wheel = next(dist.glob("agent_nodes-*.whl"))
    installed = run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout[-5000:] + installed.stderr[-5000:]

    helped = run(bin_dir / "nodectl", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "Usage: nodectl" in helped.stdout
    version = run(bin_dir / "nodectl", "version", "--client", "-o", "json", cwd=tmp_path)
    assert json.loads(version.stdout) == {"client": __version__}

    listed = run(python, "-m", "pip", "list", "--format", "json", cwd=tmp_path)
    present = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "agent-nodes" in present
    assert not present & SERVER_DISTRIBUTIONS
    probe = run(
        python, "-c", f"import importlib.util as u; print([m for m in {NOT_IN_THE_CLI!r} if u.find_spec(m)])",
        cwd=tmp_path,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    for command, extra in (
        ((bin_dir / "apiserver",), "server"),
        ((python, "-m", "server"), "server"),
        ((bin_dir / "nodemanager",), "node"),
        ((python, "-m", "nodemanager"), "node"),
    ):
        refused = run(*command, cwd=tmp_path)
        assert refused.returncode == 2, (command, refused.stderr)
        assert refused.stdout == ""
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.endswith(f"install it with: pip install 'agent-nodes[{extra}]'\n"), (
            refused.stderr
        )
