"""A lease held by at most one replica at a time, with one implementation per backend.

Work that must not run on two replicas at once (and is wasted when it does) asks `held` before
each pass. A holder renews the lease every third of its time to live; one that cannot renew
(it died, froze, or lost Redis) stops counting itself the holder before the lease can expire,
and another replica takes it once it has.
"""

from __future__ import annotations

import abc
from collections.abc import Callable


class LeaderLease(abc.ABC):
    def __init__(self) -> None:
        self._on_change: list[Callable[[bool], None]] = []

    @property
    @abc.abstractmethod
    def held(self) -> bool:
        """Whether this process holds the lease now."""

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """`callback(held)` whenever this process gains or loses the lease."""
        self._on_change.append(callback)

    def _changed(self, held: bool) -> None:
        for callback in self._on_change:
            callback(held)

    async def start(self) -> None:  # noqa: B027 - optional
        """Begin competing for the lease."""

    async def stop(self) -> None:  # noqa: B027 - optional
        """Give the lease up, so another replica takes it at once."""
