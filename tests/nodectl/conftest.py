"""Fixtures of the nodectl tests: one apiserver per module, and the CLI's environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nodectl import base_env
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as process:
        yield process


@pytest.fixture
def env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    """nodectl's environment: this module's server, and a config directory of the test's own."""
    return base_env(server.base_url, tmp_path / "config")
