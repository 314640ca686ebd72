"""In-process wake-ups keyed by a string (a node id, a run id).

Long-polls (`/nodes/{id}/work`, `/runs/{id}/events?wait=`) wait on a key with a timeout and then
re-check the database anyway. With replicas, server.wake carries each notify to the others
(a `BusNotifier`), so a change made on any replica wakes the waiters of every one at once; the
re-check only covers a wake-up the bus lost.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Notifier:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiter, now and later: the server is stopping."""
        self._closed = True
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def notify(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def notify_each(self, keys: list[str]) -> None:
        for key in keys:
            self.notify(key)

    def notify_all(self) -> None:
        """Wake every current waiter: each re-reads what it waits for."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    @contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by every later `notify(key)`.

        Subscribe before checking the database and `clear()` before each check, so a
        notify that lands between the check and the wait is not missed.
        """
        event = asyncio.Event()
        if self._closed:
            event.set()
        waiters = self._waiters[key]
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(key, None)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """True when `event` was set within `seconds`."""
    if seconds <= 0:
        return event.is_set()
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
