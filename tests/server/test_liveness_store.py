"""One suite for every LivenessStore backend: in-process and Redis (a real redis-server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from server.liveness import (
    Known,
    LivenessStore,
    LivenessUnavailable,
    MemoryLivenessStore,
    Primed,
    Report,
    make_liveness_store,
)
from server.liveness.redis import RedisLivenessStore
from tests.support.ports import free_port

StoreFactory = Callable[[], Awaitable[LivenessStore]]
REPORT = Report(state="s1", detail="d1")
T0 = 1_800_000_000.25  # epoch seconds with a fraction: the backends keep it exactly


def heard_at(
    store: LivenessStore, node: str, at: float, report: Report = REPORT, **kw: float
) -> Awaitable[Known | None]:
    return store.heard(
        node,
        report,
        at,
        fresh_after=kw.get("fresh_after", at - 60),
        detail_after=kw.get("detail_after", at - 600),
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def new_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Makes started handles of one shared store (as replicas are); memory: the same one."""
    opened: list[LivenessStore] = []
    memory = MemoryLivenessStore()
    prefix = f"test:{uuid.uuid4().hex}"
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None

    async def factory() -> LivenessStore:
        store = make_liveness_store(redis_url, prefix) if redis_url else memory
        await store.start()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


async def test_unknown_node_is_not_taken(new_store: StoreFactory) -> None:
    store = await new_store()
    assert await heard_at(store, "n1", T0) is None
    assert await store.last_seen(["n1"]) == {}


async def test_recorded_report_takes_the_next_heartbeat_and_raises_seen(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    assert await store.last_seen(["n1", "other"]) == {"n1": T0}
    assert await heard_at(store, "n1", T0 + 3) == Known(draining=False)
    assert await store.last_seen(["n1"]) == {"n1": T0 + 3}


async def test_seen_never_moves_back(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0 + 10, draining=False)
    assert await heard_at(store, "n1", T0 + 5) == Known(draining=False)
    await store.record("n1", REPORT, T0 + 1, draining=False)
    assert await store.last_seen(["n1"]) == {"n1": T0 + 10}


async def test_draining_is_answered(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=True)
    assert await heard_at(store, "n1", T0 + 1) == Known(draining=True)


async def test_a_changed_state_is_not_taken_and_changes_nothing(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    assert await heard_at(store, "n1", T0 + 3, Report(state="s2", detail="d1")) is None
    assert await store.last_seen(["n1"]) == {"n1": T0}


async def test_a_node_heard_too_long_ago_is_not_taken(new_store: StoreFactory) -> None:
    """A node coming back takes the database path, which stores its return at once."""
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    assert await heard_at(store, "n1", T0 + 100, fresh_after=T0 + 1) is None
    assert await heard_at(store, "n1", T0 + 100, fresh_after=T0) == Known(draining=False)


async def test_a_changed_detail_is_taken_until_its_refresh_is_due(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    changed = Report(state="s1", detail="d2")
    assert await heard_at(store, "n1", T0 + 3, changed, detail_after=T0) == Known(draining=False)
    assert await heard_at(store, "n1", T0 + 6, changed, detail_after=T0 + 1) is None
    # the same detail is taken however old it is
    assert await heard_at(store, "n1", T0 + 6, REPORT, detail_after=T0 + 5) == Known(draining=False)


async def test_record_without_a_report_sends_the_next_heartbeat_to_the_database(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    await store.record("n1", None, T0 + 3, draining=False)
    assert await heard_at(store, "n1", T0 + 6) is None
    assert await store.last_seen(["n1"]) == {"n1": T0 + 3}


async def test_invalidate_keeps_seen(new_store: StoreFactory) -> None:
    store = await new_store()
    for node in ("n1", "n2"):
        await store.record(node, REPORT, T0, draining=False)
    await store.invalidate(["n1", "unknown"])
    assert await heard_at(store, "n1", T0 + 3) is None
    assert await heard_at(store, "n2", T0 + 3) == Known(draining=False)
    assert await store.last_seen(["n1", "n2"]) == {"n1": T0, "n2": T0 + 3}


async def test_forget_drops_the_node(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("n1", REPORT, T0, draining=False)
    await store.forget(["n1"])
    assert await store.last_seen(["n1"]) == {}
    assert await heard_at(store, "n1", T0 + 3) is None


async def test_prime_fills_only_unknown_nodes(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record("known", REPORT, T0 + 50, draining=False)
    entries = [
        Primed("known", T0, "other", draining=True),
        Primed("fresh", T0, REPORT.state, draining=True),
        Primed("no-report", T0, None, draining=False),
    ]
    assert await store.prime(entries, at=T0 + 1) == 2
    assert await store.last_seen(["known", "fresh", "no-report"]) == {
        "known": T0 + 50,
        "fresh": T0,
        "no-report": T0,
    }
    assert await heard_at(store, "known", T0 + 60) == Known(draining=False)
    # a primed report's detail is unknown: taken until the refresh is due, then not
    assert await heard_at(store, "fresh", T0 + 3, detail_after=T0) == Known(draining=True)
    assert await heard_at(store, "fresh", T0 + 6, detail_after=T0 + 2) is None
    assert await heard_at(store, "no-report", T0 + 3) is None


async def test_a_primed_detail_is_known(new_store: StoreFactory) -> None:
    """A node whose stored report carries its detail too is taken past the refresh: after a
    restart the fleet does not come back through the database ten intervals later."""
    store = await new_store()
    await store.prime([Primed("n1", T0, REPORT.state, draining=False, detail=REPORT.detail)], at=T0)
    assert await heard_at(store, "n1", T0 + 6, detail_after=T0 + 2) == Known(draining=False)
    assert Report.parse_stored(REPORT.stored()) == (REPORT.state, REPORT.detail)
    assert Report.parse_stored(None) == (None, "")


async def test_prime_of_many_nodes(new_store: StoreFactory) -> None:
    store = await new_store()
    entries = [Primed(f"n{i}", T0 + i, REPORT.state, draining=False) for i in range(2500)]
    assert await store.prime(entries, at=T0) == 2500
    seen = await store.last_seen([f"n{i}" for i in range(0, 2500, 100)])
    assert seen == {f"n{i}": T0 + i for i in range(0, 2500, 100)}


async def test_replicas_share_one_store(new_store: StoreFactory) -> None:
    first, second = await new_store(), await new_store()
    await first.record("n1", REPORT, T0, draining=False)
    assert await heard_at(second, "n1", T0 + 3) == Known(draining=False)
    assert await first.last_seen(["n1"]) == {"n1": T0 + 3}
    await second.invalidate(["n1"])
    assert await heard_at(first, "n1", T0 + 6) is None


async def test_closed_memory_store_is_unavailable() -> None:
    store = MemoryLivenessStore()
    await store.start()
    await store.close()
    assert not await store.ping()
    with pytest.raises(LivenessUnavailable):
        await heard_at(store, "n1", T0)


async def test_unreachable_redis_is_unavailable() -> None:
    store = RedisLivenessStore(f"redis://127.0.0.1:{free_port()}/0")
    assert not await store.ping()
    with pytest.raises(LivenessUnavailable):
        await heard_at(store, "n1", T0)
    with pytest.raises(LivenessUnavailable):
        await store.record("n1", REPORT, T0, draining=False)
    await store.close()
