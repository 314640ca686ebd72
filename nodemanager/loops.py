"""Long-lived service loops that survive a flaky apiserver, in the spirit of Prefect's critical_service_loop.

A loop body runs, then the loop sleeps for the interval the body returns (with jitter). A transient
error (server unreachable, 5xx) backs off exponentially up to a ceiling; any other error is logged
with its traceback and also backed off, so a bug shows up in the log instead of silently ending a
loop the daemon depends on. Only cancellation ends a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from nodeapi.errors import ApiError, GatewayTimeout, ServerError, TransportError

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransportError, ServerError, GatewayTimeout)


def jittered(seconds: float, fraction: float = 0.1) -> float:
    """`seconds` ± `fraction`, so that many nodes started together do not stay in lockstep."""
    return max(0.0, seconds * (1.0 + random.uniform(-fraction, fraction)))


class Backoff:
    """Exponential backoff with full jitter on the upper half: base, 2*base, ... up to `ceiling`."""

    def __init__(self, base: float = 0.5, ceiling: float = 30.0) -> None:
        self.base = base
        self.ceiling = ceiling
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.ceiling, self.base * 2 ** (self.failures - 1))
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


async def service_loop(
    name: str,
    body: Callable[[], Awaitable[float]],
    *,
    backoff_ceiling: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run `body` until cancelled or `stop` is set; `body` returns the seconds until its next round."""
    backoff = Backoff(ceiling=backoff_ceiling)
    while stop is None or not stop.is_set():
        try:
            interval = await body()
        except asyncio.CancelledError:
            raise
        except TRANSIENT_ERRORS as exc:
            delay = backoff.next_delay()
            noisy = backoff.failures in (1, 5) or backoff.failures % 20 == 0
            level = logging.WARNING if noisy else logging.DEBUG
            log.log(level, "%s: %s (failure %d, retrying in %.1fs)", name, exc, backoff.failures, delay)
        except ApiError as exc:  # the server refused: say why, without a traceback
            delay = backoff.next_delay()
            log.error("%s: %s (failure %d, retry in %.1fs)", name, exc, backoff.failures, delay)
        except Exception:
            delay = backoff.next_delay()
            log.exception("%s failed (failure %d, retry in %.1fs)", name, backoff.failures, delay)
        else:
            if backoff.failures:
                log.info("%s recovered after %d failures", name, backoff.failures)
            backoff.reset()
            delay = jittered(interval)
        if delay > 0:
            await _sleep_unless(stop, delay)


async def _sleep_unless(stop: asyncio.Event | None, delay: float) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
