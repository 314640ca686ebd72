"""Bridges from long-blocking calls to asyncio, on dedicated daemon threads.

A followed log stream or a container wait blocks for the whole life of a run. On
asyncio.to_thread each would pin one worker of the default executor (min(32, cpus + 4):
six on a 2-core node) and a handful of runs would starve every other to_thread call.
Short calls still use asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_HANDOVER_POLL_SECONDS = 0.5


def in_daemon_thread(function: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `function` on a new daemon thread; a future of its result.

    Cancelling the future does not stop the thread: it ends when `function` returns.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = function()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


async def iterate_in_thread(
    produce: Callable[[], Iterable[T]], interrupt: Callable[[], None], name: str, maxsize: int = 256
) -> AsyncGenerator[T, None]:
    """Items of a blocking iterable, read on a daemon thread, with back-pressure.

    `interrupt` is called when the consumer stops early; it must unblock the producer
    (e.g. shut down the socket it reads). Errors of the producer are re-raised here.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize)
    stopping = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        try:
            pending = asyncio.run_coroutine_threadsafe(queue.put((kind, value)), loop)
        except RuntimeError:  # loop closed
            return False
        while not stopping.is_set():
            try:
                pending.result(timeout=_HANDOVER_POLL_SECONDS)
                return True
            except concurrent.futures.TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                return False
        pending.cancel()
        return False

    def target() -> None:
        try:
            for item in produce():
                if not hand_over("item", item):
                    return
            hand_over("end", None)
        except BaseException as exc:
            if not stopping.is_set():
                hand_over("error", exc)

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stopping.set()
        interrupt()
