"""The one long-poll loop: check, and while there is nothing to answer, wait for a wake-up.

A request subscribes to a key of a `Notifier` before its first check, so a change that lands
between a check and the wait is not missed. Without a wake-up it checks again every `recheck`
seconds, which is how changes made by another apiserver replica arrive. It answers when
`ready(result)` holds, when `wait` seconds have passed, or at once when the server is stopping.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.services.notifier import Notifier, wait_event

T = TypeVar("T")


async def long_poll(
    notifier: Notifier,
    key: str,
    check: Callable[[], Awaitable[T]],
    ready: Callable[[T], bool],
    *,
    wait: float,
    recheck: Callable[[T], float],
) -> T:
    deadline = time.monotonic() + wait
    with notifier.subscribe(key) as woken:
        while True:
            woken.clear()
            result = await check()
            remaining = deadline - time.monotonic()
            if ready(result) or remaining <= 0 or notifier.closed:
                return result
            await wait_event(woken, min(remaining, recheck(result)))
