"""Fixtures of the server tests that work on the database directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.scheduler_db import fresh_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database of the test's backend, with the schema created."""
    engine = await fresh_engine(database_url)
    yield engine
    await engine.dispose()
