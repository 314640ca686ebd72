"""nodectl.bulk's worker pool: bounded, every item once, errors raised in the caller.

The fleet-wide commands themselves run end to end in tests/e2e/test_fleet.py."""

from __future__ import annotations

import threading

import pytest

from nodectl.bulk import run_parallel


def test_run_parallel_works_on_exactly_parallel_items_at_once() -> None:
    parallel = 3
    together = threading.Barrier(parallel, timeout=10)  # breaks unless `parallel` items run at once
    lock = threading.Lock()
    active = 0
    most = 0
    seen: list[int] = []

    def work(item: int) -> int:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        together.wait()
        with lock:
            active -= 1
        return item * 10

    run_parallel(list(range(9)), work, parallel, seen.append)

    assert sorted(seen) == [i * 10 for i in range(9)]
    assert most == parallel


def test_run_parallel_raises_the_first_error_and_starts_nothing_after_it() -> None:
    started: list[int] = []
    seen: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 2:
            raise ValueError("boom")
        return item

    with pytest.raises(ValueError, match="boom"):
        run_parallel(list(range(10)), work, 1, seen.append)
    assert started == [0, 1, 2]
    assert seen == [0, 1]


def test_run_parallel_with_nothing_to_do() -> None:
    run_parallel([], lambda item: item, 8, lambda result: pytest.fail("no result expected"))
