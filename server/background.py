"""The apiserver's periodic background steps (scheduler loops, lost-run reaper).

`run_forever` runs a step, then waits `every` seconds (± 10 %), until cancelled. A failing step
is retried through stamina with exponential backoff and jitter (0.2 s doubling up to 10 s), one
log line per retry (nodeapi.retry.log_retries, installed at start); a backend outage (database,
queue) is a line, any other error also logs its traceback at DEBUG. It never ends on an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable

import stamina

log = logging.getLogger("server.background")

RETRY_INITIAL = 0.2
RETRY_CEILING = 10.0


async def run_forever(
    name: str,
    step: Callable[[], Awaitable[None]],
    every: float,
    *,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    def retryable(exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # cancellation ends the loop
            return False
        if on_failure is not None:
            on_failure(exc)
        log.debug("%s failed", name, exc_info=exc)
        return True

    @stamina.retry(
        on=retryable,
        attempts=None,
        timeout=None,
        wait_initial=RETRY_INITIAL,
        wait_max=RETRY_CEILING,
        wait_jitter=RETRY_INITIAL,
    )
    @functools.wraps(step)
    async def attempt() -> None:
        await step()

    attempt.__qualname__ = name  # what the retry log line calls it
    while True:
        await attempt()
        if every:
            await asyncio.sleep(every * random.uniform(0.9, 1.1))


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    """`run_forever(name, step, every)` as one task: `start()` (once), `stop()` (cancel and wait)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[None]], every: float) -> None:
        self._name, self._step, self._every = name, step, every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                run_forever(self._name, self._step, self._every), name=self._name.replace(" ", "-")
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
