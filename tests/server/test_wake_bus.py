"""The wake bus and the leader lease, against a real redis-server and the in-process backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from server.leader import SoleLeader
from server.leader.redis import RedisLease
from server.wake import MemoryWakeBus, WakeBus
from server.wake.redis import RedisWakeBus
from tests.support.redis import RedisServer

BusFactory = Callable[[], WakeBus]


@pytest.fixture(params=["memory", "redis"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Buses of one backend, as replicas would make them; started, and closed at the end."""
    made: list[WakeBus] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")

    def make() -> WakeBus:
        bus: WakeBus = MemoryWakeBus() if server is None else RedisWakeBus(server.url, "test:wake")
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


async def started(bus: WakeBus) -> WakeBus:
    await bus.start()
    if isinstance(bus, RedisWakeBus):
        await asyncio.wait_for(bus.subscribed.wait(), 5)
    return bus


async def test_a_notify_wakes_the_waiters_of_its_own_process(buses: BusFactory) -> None:
    notifier = (await started(buses())).notifier("node_work")
    with notifier.subscribe("n1") as woken, notifier.subscribe("n2") as other:
        notifier.notify("n1")
        assert woken.is_set()
        assert not other.is_set()


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[WakeBus, WakeBus]]:
    """Two replicas' buses on one Redis (the in-process bus has no other replica to wake)."""
    a, b = RedisWakeBus(redis_server.url, "test:wake"), RedisWakeBus(redis_server.url, "test:wake")
    yield await started(a), await started(b)
    await a.close()
    await b.close()


async def test_a_notify_on_one_replica_wakes_the_others_within_100_ms(
    replicas: tuple[WakeBus, WakeBus],
) -> None:
    a, b = replicas
    sender, receiver = a.notifier("node_work"), b.notifier("node_work")
    b.notifier("run_updates")  # another topic on the same channel: not woken by node_work
    with receiver.subscribe("n1") as woken, receiver.subscribe("n2") as other:
        began = time.perf_counter()
        sender.notify("n1")
        await asyncio.wait_for(woken.wait(), 1)
        assert time.perf_counter() - began < 0.1
        assert not other.is_set()


async def test_a_burst_of_wake_ups_arrives_whole(replicas: tuple[WakeBus, WakeBus]) -> None:
    a, b = replicas
    sender, receiver = a.notifier("run_updates"), b.notifier("run_updates")
    keys = [f"run-{i}" for i in range(2500)]  # more than one message's worth
    with contextlib_nested(receiver, keys) as events:
        for key in keys:
            sender.notify(key)
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 5)


class contextlib_nested:
    """Subscriptions to many keys at once."""

    def __init__(self, notifier: object, keys: list[str]) -> None:
        self._managers = [notifier.subscribe(key) for key in keys]  # type: ignore[attr-defined]

    def __enter__(self) -> list[asyncio.Event]:
        return [manager.__enter__() for manager in self._managers]

    def __exit__(self, *exc: object) -> None:
        for manager in self._managers:
            manager.__exit__(*exc)


async def test_after_redis_comes_back_every_waiter_is_woken_to_re_read(redis_server: RedisServer) -> None:
    bus = RedisWakeBus(redis_server.url, "test:wake")
    reconnected: list[float] = []
    bus.on_reconnect(lambda: reconnected.append(time.monotonic()))
    await started(bus)
    try:
        listening_again = asyncio.Event()
        bus.on_reconnect(listening_again.set)
        redis_server.restart(kill=True)
        await asyncio.wait_for(listening_again.wait(), 20)
        assert reconnected
    finally:
        await bus.close()


async def test_one_process_always_leads() -> None:
    lease = SoleLeader()
    await lease.start()
    assert lease.held


async def test_one_replica_holds_the_lease_and_another_takes_it_when_it_stops(
    redis_server: RedisServer,
) -> None:
    first = RedisLease(redis_server.url, ttl=1.5, key="test:leader")
    second = RedisLease(redis_server.url, ttl=1.5, key="test:leader")
    changes: list[bool] = []
    second.on_change(changes.append)
    await first.start()
    await second.start()
    try:
        assert await first.try_once()
        assert await first.try_once()  # renewed
        assert not await second.try_once()
        await first.stop()  # a clean shutdown gives the lease up at once
        assert await second.try_once()
        assert changes == [True]
    finally:
        await first.stop()
        await second.stop()


async def test_a_holder_that_dies_is_replaced_after_the_ttl(redis_server: RedisServer) -> None:
    dead = RedisLease(redis_server.url, ttl=1.0, key="test:leader")
    heir = RedisLease(redis_server.url, ttl=1.0, key="test:leader")
    dead.connect()
    heir.connect()
    try:
        assert await dead.try_once()  # and then it stops renewing, as a killed process does
        began = time.monotonic()
        while not await heir.try_once():
            assert time.monotonic() - began < 3, "the lease never passed on"
            await asyncio.sleep(0.05)
        assert time.monotonic() - began >= 0.5  # not before the dead holder's lease ran out
        assert not dead.held  # it counted itself the holder for less than the lease lived
    finally:
        await heir.stop()
        await dead.stop()
