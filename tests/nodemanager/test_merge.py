"""Merging output streams read apart into one sequence in timestamp order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import pytest

from nodemanager.runtime.base import LogLine
from nodemanager.runtime.merge import merge_by_timestamp
from nodemanager.runtime.timestamps import format_ns

STEP = 10.0


def line(stream: str, n: int) -> LogLine:
    return LogLine(stream, f"{stream}{n}", format_ns(1_700_000_000_000_000_000 + n))


async def stream(
    name: str, numbers: list[int], delay: float = 0.0, then_wait: float = 0.0
) -> AsyncGenerator[LogLine, None]:
    """Lines `numbers` of `name`, all after `delay`; the stream then stays open `then_wait` seconds."""
    await asyncio.sleep(delay)
    for n in numbers:
        yield line(name, n)
    await asyncio.sleep(then_wait)


async def merged(*streams: AsyncGenerator[LogLine, None], hold: float = 0.05) -> list[str]:
    async def read_all() -> list[str]:
        return [line.text async for line in merge_by_timestamp(streams, hold=hold)]

    return await asyncio.wait_for(read_all(), STEP)


async def test_a_lagging_stream_still_comes_out_in_timestamp_order() -> None:
    texts = await merged(stream("out", [1, 3, 5]), stream("err", [2, 4, 6], delay=0.02), hold=0.2)

    assert texts == ["out1", "err2", "out3", "err4", "out5", "err6"]


async def test_lines_of_a_quiet_stream_are_not_held_for_ever() -> None:
    received: list[tuple[str, float]] = []
    started = time.monotonic()
    async for item in merge_by_timestamp([stream("out", [1]), stream("err", [], then_wait=1.0)], hold=0.05):
        received.append((item.text, time.monotonic() - started))

    assert [text for text, _ in received] == ["out1"]
    assert received[0][1] < 0.5


async def test_an_error_of_one_stream_ends_the_merge_and_closes_the_others() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncGenerator[LogLine, None]:
        try:
            while True:
                await asyncio.sleep(3600)
                yield line("out", 1)
        finally:
            closed.set()

    async def broken() -> AsyncGenerator[LogLine, None]:
        yield line("err", 1)
        raise OSError("stream broke")

    with pytest.raises(OSError, match="stream broke"):
        await merged(endless(), broken())
    assert closed.is_set()


async def test_stopping_early_closes_every_stream() -> None:
    closed: list[str] = []

    async def tracked(name: str) -> AsyncGenerator[LogLine, None]:
        try:
            for n in range(1, 1000):
                yield line(name, n)
                await asyncio.sleep(0.001)
        finally:
            closed.append(name)

    lines = merge_by_timestamp([tracked("out"), tracked("err")])
    async for item in lines:
        if item.text == "out3":
            break
    await lines.aclose()

    assert sorted(closed) == ["err", "out"]
