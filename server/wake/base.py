"""The wake bus: a wake-up notified on one replica reaches the same key's waiters on every replica.

Long-polls and live views wait on a `Notifier` key (a node id for its work, a run id for its
events); the code that changes the state notifies that key. On one process that is all it takes.
With replicas, the change may happen on another one: a `BusNotifier` notifies its own waiters at
once and hands the key to the bus, which carries it to the other replicas' notifiers of the same
topic. Delivery is best effort (a replica that was disconnected misses what was said meanwhile),
so waiters still re-read the database now and then; the bus only makes the common case fast.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from server.services.notifier import Notifier

Deliver = Callable[[str], None]


class WakeBus(abc.ABC):
    """Carries (topic, key) wake-ups from this process to the others."""

    def __init__(self) -> None:
        self._topics: dict[str, Deliver] = {}
        self._on_reconnect: list[Callable[[], None]] = []

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """`callback()` once the bus listens again after losing its connection: what other
        replicas sent meanwhile is lost, so local waiters must re-read."""
        self._on_reconnect.append(callback)

    def attach(self, topic: str, deliver: Deliver) -> None:
        """`deliver(key)` runs in this process for each wake-up of `topic` sent by another one."""
        self._topics[topic] = deliver

    def notifier(self, topic: str) -> BusNotifier:
        notifier = BusNotifier(topic, self)
        self.attach(topic, notifier.notify_here)
        return notifier

    def deliver(self, topic: str, key: str) -> None:
        target = self._topics.get(topic)
        if target is not None:
            target(key)

    @property
    @abc.abstractmethod
    def shared(self) -> bool:
        """Whether wake-ups reach other processes (else only this one's waiters wake)."""

    @abc.abstractmethod
    def publish(self, topic: str, key: str) -> None:
        """Send to the other processes; never blocks, never raises."""

    async def start(self) -> None:  # noqa: B027 - optional
        """Connect and listen."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Stop listening."""

    async def stop(self) -> None:
        await self.close()


class BusNotifier(Notifier):
    """A Notifier whose wake-ups also reach the same topic on every other replica."""

    def __init__(self, topic: str, bus: WakeBus) -> None:
        super().__init__()
        self.topic = topic
        self._bus = bus

    def notify(self, key: str) -> None:
        self.notify_here(key)
        self._bus.publish(self.topic, key)

    def notify_here(self, key: str) -> None:
        super().notify(key)
