"""Retries of the nodemanager (all on stamina) and its long-lived service loops.

Every retry uses `retrying`: exponential backoff with jitter up to a ceiling, and one log line
per scheduled retry (`nodeapi.retry.log_retries`, installed at start). A service loop runs its
body, then sleeps for the interval the body returns (± 10 %). A failed round is retried with
backoff, whatever the error: a transient one (server unreachable, 5xx), a refusal by the
server, or a bug, whose traceback is logged once per failure streak, so it shows in the log
instead of silently ending a loop the daemon depends on. Only cancellation or `stop` ends one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import stamina

from nodeapi.errors import ApiError
from nodeapi.retry import retry_delay

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
RetryHook = Callable[[Exception], bool | float]

RETRY_INITIAL = 0.5  # seconds before the first retry (plus up to as much jitter)
DEFAULT_CEILING = 30.0


def jittered(seconds: float, fraction: float = 0.1) -> float:
    """`seconds` ± `fraction`, so that many nodes started together do not stay in lockstep."""
    return max(0.0, seconds * (1.0 + random.uniform(-fraction, fraction)))


def retrying(
    on: type[Exception] | tuple[type[Exception], ...] | RetryHook,
    *,
    ceiling: float,
    attempts: int | None = None,
    initial: float = RETRY_INITIAL,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """stamina's retry decorator with the nodemanager's backoff: `initial` doubling up to
    `ceiling`, jitter of up to `initial`; `attempts=None` retries until it succeeds."""
    return stamina.retry(
        on=on,
        attempts=attempts,
        timeout=None,
        wait_initial=initial,
        wait_max=ceiling,
        wait_jitter=initial,
        wait_exp_base=2,
    )


def retried(
    call: Callable[[], Awaitable[T]],
    on: RetryHook,
    *,
    ceiling: float,
    attempts: int | None = None,
    initial: float = RETRY_INITIAL,
) -> Callable[[], Coroutine[Any, Any, T]]:
    """`call` with `retrying`; the retry log line names it as it names `call`."""

    @functools.wraps(call)
    async def attempt() -> T:
        return await call()

    return retrying(on, ceiling=ceiling, attempts=attempts, initial=initial)(attempt)


def retry_hook(retryable: Callable[[Exception], bool], ceiling: float) -> RetryHook:
    """A stamina `on` hook retrying what `retryable` accepts: after the server's Retry-After
    (at most `ceiling`) when it sent one, else after the backoff."""

    def on(exc: BaseException) -> bool | float:
        # stamina hands its hook whatever the call raised, cancellation included
        if not isinstance(exc, Exception) or not retryable(exc):
            return False
        delay = retry_delay(exc)
        return True if isinstance(delay, bool) else min(delay, ceiling)

    return on


async def until_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, object]) -> None:
    """Await `work`, cancelling it as soon as `stop` is set (also while it sleeps)."""
    if stop.is_set():
        work.close()
        return
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        stopping.cancel()
        await asyncio.wait((task, stopping))
    if not task.cancelled():
        task.result()


async def service_loop(
    name: str,
    body: Callable[[], Awaitable[float]],
    *,
    backoff_ceiling: float | Callable[[], float] = DEFAULT_CEILING,
    backoff_initial: float = RETRY_INITIAL,
    stop: asyncio.Event | None = None,
) -> None:
    """Run `body` until cancelled or `stop` is set; `body` returns the seconds until its next round.

    `backoff_ceiling` may be a function: it is read again before each round (the heartbeat's
    follows the interval the server asks for)."""
    stop = stop if stop is not None else asyncio.Event()
    await until_stopped(stop, _rounds(name, body, backoff_initial, backoff_ceiling, stop))


async def _rounds(
    name: str,
    body: Callable[[], Awaitable[float]],
    initial: float,
    ceiling: float | Callable[[], float],
    stop: asyncio.Event,
) -> None:
    streak = _FailureStreak(name)
    while not stop.is_set():
        limit = ceiling() if callable(ceiling) else ceiling
        round_ = retried(body, retry_hook(streak.retryable, limit), ceiling=limit, initial=initial)
        interval = await round_()
        streak.end()
        await asyncio.sleep(jittered(interval))


class _FailureStreak:
    """The failed tries of a service loop since its last good round; every error is retried."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._last_bug: str | None = None

    def retryable(self, exc: Exception) -> bool:
        self.failures += 1
        if not isinstance(exc, ApiError):  # a bug, not the server: its traceback, once a streak
            bug = f"{type(exc).__qualname__}: {exc}"
            if bug != self._last_bug:
                log.error("%s: unexpected error", self.name, exc_info=exc)
                self._last_bug = bug
        return True

    def end(self) -> None:
        if self.failures:
            log.info("%s recovered after %d failures", self.name, self.failures)
        self.failures = 0
        self._last_bug = None
