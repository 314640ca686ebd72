"""Waiting for a condition with a deadline: the one poll-until helper of the test suite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str | None = None
) -> T:
    """The first truthy result of `check`, polled every `interval` until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout}s (last: {result!r})")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T | None]],
    within: float = 15.0,
    interval: float = 0.05,
    what: str | None = None,
) -> T:
    """`eventually` for an async check, sleeping on the event loop."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], bool], what: str = "condition", timeout: float = 15.0, interval: float = 0.1
) -> None:
    """Until `condition()` holds; AssertionError naming `what` after `timeout` seconds."""
    eventually(condition, timeout, interval, what)
