"""Pytest plugin: `redis_server`, a throwaway redis-server per test (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def persistent_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(persist_dir=tmp_path) as server:
        yield server
