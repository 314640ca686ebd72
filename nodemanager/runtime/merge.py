"""One sequence in timestamp order from output streams read apart (a container's stdout and stderr).

Resuming after a timestamp (`since`) skips nothing only if lines come out in timestamp order, as
they do from one multiplexed stream. Streams read on threads of their own may lag behind each
other, so a line is handed out only once every other live stream has shown a later line or has
had `hold` seconds to show an earlier one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from nodemanager.runtime.base import LogLine

HOLD_SECONDS = 0.1


@dataclass
class _Source:
    lines: AsyncGenerator[LogLine, None]
    held: deque[tuple[float, LogLine]] = field(default_factory=deque)  # (arrival, line)
    reading: asyncio.Task[LogLine | None] | None = None
    reading_since: float = 0.0

    async def next_line(self) -> LogLine | None:
        try:
            return await anext(self.lines)
        except StopAsyncIteration:
            return None


async def merge_by_timestamp(
    streams: Sequence[AsyncGenerator[LogLine, None]], hold: float = HOLD_SECONDS
) -> AsyncGenerator[LogLine, None]:
    """The lines of `streams` (each in timestamp order) in timestamp order; the first error ends it."""
    loop = asyncio.get_running_loop()
    sources = [_Source(stream) for stream in streams]

    def read(source: _Source) -> None:
        source.reading = asyncio.create_task(source.next_line())
        source.reading_since = loop.time()

    for source in sources:
        read(source)
    try:
        while True:
            for source in sources:  # take in every line that has arrived, before choosing
                if source.reading is not None and source.reading.done():
                    line = source.reading.result()
                    source.reading = None
                    if line is not None:
                        source.held.append((loop.time(), line))
                        read(source)
            if not any(source.reading or source.held for source in sources):
                return
            delay = _delay_before_next(sources, loop.time(), hold)
            if delay <= 0:
                yield _earliest(sources).held.popleft()[1]
                continue
            pending = [source.reading for source in sources if source.reading is not None]
            timeout = None if delay == float("inf") else delay
            await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reading = [source.reading for source in sources if source.reading is not None]
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        for source in sources:
            await source.lines.aclose()


def _earliest(sources: list[_Source]) -> _Source:
    return min((source for source in sources if source.held), key=lambda source: source.held[0][1].ts or "")


def _delay_before_next(sources: list[_Source], now: float, hold: float) -> float:
    """Seconds until the earliest held line may go out: 0 when it may now, inf when none is held."""
    if not any(source.held for source in sources):
        return float("inf")
    arrived = _earliest(sources).held[0][0]
    # a stream that has nothing held but is still read might yet show an earlier line
    quiet_since = [source.reading_since for source in sources if source.reading and not source.held]
    if not quiet_since:
        return 0.0
    return max(arrived, *quiet_since) + hold - now
