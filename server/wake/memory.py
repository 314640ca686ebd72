"""One process: every waiter is here, so there is nothing to carry."""

from __future__ import annotations

from server.wake.base import WakeBus


class MemoryWakeBus(WakeBus):
    @property
    def shared(self) -> bool:
        return False

    def publish(self, topic: str, key: str) -> None:
        return None
