"""Delivery of run events to the apiserver: ordered, batched, retried until acknowledged.

The batches of all the node's runs travel together (`EventShipper`): what the reporters hand
over while one request is out goes in the next POST /nodes/{id}/events, which the apiserver
applies in one transaction and answers run by run, so a node finishing many short runs costs
the server one request and one commit per round trip instead of one per run.

Each run has one `RunReporter`. Events get a per-run `node_seq` that strictly increases; the
server stores only events above the run's `last_node_seq`, so resending a batch whose answer was
lost never duplicates anything. Pending events stay in memory, in order, until acknowledged.
A log producer that outruns the server is slowed down (`log` waits while too much is pending)
rather than the daemon's memory growing without bound: the runtime keeps the output meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

from nodeapi import models as m
from nodeapi.client import AsyncClient, Calls
from nodeapi.errors import HTTPStatusError, error_for_status
from nodeapi.validation import MAX_EVENT_DATA_BYTES, MAX_RUNS_PER_EVENT_BATCH, json_pieces
from nodemanager.loops import retry_hook, retrying

log = logging.getLogger(__name__)

MAX_BATCH = 200
MAX_BATCH_BYTES = 512 * 1024  # encoded; well under the apiserver's default 1 MiB body limit
LINGER = 0.2  # seconds a batch waits for more log lines before it is sent
MAX_PENDING = 20_000  # log lines buffered per run before the reader is paused
# answers that will never change for this run's events; 413 makes batches smaller, anything else
# is retried: 403 the run is not (or no longer) placed here, 404 unknown, 409 a stale attempt
REFUSED_STATUSES = frozenset({400, 403, 404, 409, 422})
TOO_LARGE = 413
MIN_BATCH_BYTES = 4 * 1024
SHRUNK_TEXT = 1024  # characters of a log line or message kept when one event alone is too large
RETRY_CEILING = 10.0  # seconds; events are what users wait for, so retry sooner than heartbeats
RETRY_INITIAL = 0.2
MAX_IN_FLIGHT = 2  # node event requests out at once: a run's claim need not wait behind another's batch
FINAL_EVENTS = frozenset({"exited", "failed", "cancelled"})


class EventShipper:
    """Carries the event batches of every run of the node to the apiserver, many per request.

    At most MAX_IN_FLIGHT requests are out at a time; batches handed over while they are wait and
    go together in the next one (at most MAX_BATCH_BYTES of events, or one batch alone if it is
    larger). A reporter has one batch out at a time, so its run's events stay in order. Each reporter
    gets its own run's answer: the ack, or the HTTPStatusError its own POST
    /runs/{id}/node-events would have raised. A failure of the whole request (transport, 5xx,
    401, 413) is raised to every reporter in it, and each retries as before. An apiserver
    without the route (404/405 on it) is sent one request per run from then on.
    """

    def __init__(self, client: AsyncClient, node_id: str) -> None:
        self._client = client
        self._node_id = node_id
        self._queue: list[tuple[m.RunEvents, int, asyncio.Future[m.NodeEventAck]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._free = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: set[asyncio.Task[None]] = set()
        self.per_run = False
        self.requests = 0  # requests sent, for tests and logs

    async def send(self, item: m.RunEvents, size: int) -> m.NodeEventAck:
        """The run's ack; `size`: the encoded bytes of its events."""
        if self.per_run:
            return await self._send_alone(item)
        future: asyncio.Future[m.NodeEventAck] = asyncio.get_running_loop().create_future()
        self._queue.append((item, size, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._ship_loop(), name="event-shipper")
        return await future

    async def close(self) -> None:
        tasks = [*([self._task] if self._task is not None else []), *self._in_flight]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()

    async def _send_alone(self, item: m.RunEvents) -> m.NodeEventAck:
        batch = m.NodeEventBatch(node_id=self._node_id, events=item.events, attempt=item.attempt)
        self.requests += 1
        return await self._client.send(Calls.post_run_events(item.run_id, batch))

    def _take(self) -> list[tuple[m.RunEvents, int, asyncio.Future[m.NodeEventAck]]]:
        self._queue = [entry for entry in self._queue if not entry[2].done()]  # reporters closed
        total = 0
        for index, (_, size, _) in enumerate(self._queue[:MAX_RUNS_PER_EVENT_BATCH]):
            total += size
            if total > MAX_BATCH_BYTES and index > 0:
                break
        else:
            index = min(len(self._queue), MAX_RUNS_PER_EVENT_BATCH)
        taken, self._queue = self._queue[:index], self._queue[index:]
        return taken

    async def _ship_loop(self) -> None:
        while True:
            await self._free.acquire()
            taken = self._take()
            while not taken:
                self._wakeup.clear()
                await self._wakeup.wait()
                taken = self._take()
            task = asyncio.create_task(self._ship(taken), name="event-shipment")
            self._in_flight.add(task)
            task.add_done_callback(self._shipped)

    def _shipped(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._free.release()

    async def _ship(self, taken: list[tuple[m.RunEvents, int, asyncio.Future[m.NodeEventAck]]]) -> None:
        if self.per_run:
            _fail(taken, _Resend("sent again, one request per run"))
            return
        body = m.NodeEventsBatch(runs=[item for item, _, _ in taken])
        try:
            self.requests += 1
            reply = await self._client.send(Calls.post_node_events(self._node_id, body))
        except HTTPStatusError as exc:
            if exc.status_code in (404, 405):
                log.info("the apiserver has no node event batches (%s); one request per run", exc)
                self.per_run = True
                _fail(taken, _Resend("sent again, one request per run"))
                return
            _fail(taken, exc)
            return
        except Exception as exc:  # transport and the like: every reporter retries its own
            _fail(taken, exc)
            return
        by_run = {result.run_id: result for result in reply.results}
        for item, _, future in taken:
            if future.done():
                continue
            result = by_run.get(item.run_id)
            if result is None:
                future.set_exception(error_for_status(502, f"no answer for run {item.run_id}"))
            elif result.ack is not None and result.status_code == 200:
                future.set_result(result.ack)
            else:
                detail = result.detail or f"refused with status {result.status_code}"
                future.set_exception(error_for_status(result.status_code, detail, result.extra))


class _Resend(Exception):
    """Not an answer: the reporter sends its batch again (retried like a transport error)."""


def _fail(taken: list[tuple[m.RunEvents, int, asyncio.Future[m.NodeEventAck]]], exc: Exception) -> None:
    for _, _, future in taken:
        if not future.done():
            future.set_exception(exc)


class EventsRejected(Exception):
    """The server refused the run's events for good (run unknown, assigned elsewhere, invalid)."""


class RunReporter:
    """Ordered, retried event stream of one run."""

    def __init__(
        self,
        client: AsyncClient,
        node_id: str,
        run_id: str,
        last_node_seq: int,
        attempt: int | None = None,
        shipper: EventShipper | None = None,
    ) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self._client = client
        self._shipper = shipper
        self._node_id = node_id
        self._next_seq = last_node_seq + 1
        self._pending: list[m.NodeEventIn] = []
        self._sizes: list[int] = []  # encoded size of each pending event
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._acked = asyncio.Condition()
        self._acked_seq = last_node_seq
        self._final_seq: int | None = None
        self._rejected: EventsRejected | None = None
        self._max_batch_bytes = MAX_BATCH_BYTES
        self.cancel_requested = False  # the server said so in an ack
        self.server_status: str | None = None  # the run's status in the latest ack
        self._task = asyncio.create_task(self._send_loop(), name=f"reporter:{run_id}")

    # producers -------------------------------------------------------------
    def emit(self, type_: str, data: dict[str, Any] | None = None) -> int:
        """Queue an event; its node_seq."""
        if self._final_seq is not None:
            raise RuntimeError(f"run {self.run_id}: event {type_!r} after the final event")
        seq = self._next_seq
        self._next_seq += 1
        if type_ in FINAL_EVENTS:
            self._final_seq = seq
        if self._rejected is not None:
            return seq  # the server will not take it; wait_acked() raises for it
        event = m.NodeEventIn(node_seq=seq, type=type_, data=data or {}, at=datetime.now(UTC))
        self._pending.append(event)
        self._sizes.append(len(msgspec.json.encode(event)))
        if len(self._pending) >= MAX_PENDING:
            self._room.clear()
        self._wakeup.set()
        return seq

    async def log(self, stream: str, text: str, ts: str | None) -> None:
        """One output line; a line whose event would pass the server's MAX_EVENT_DATA_BYTES goes
        as several events, in order (the server refuses a bigger one with 413)."""
        await self._room.wait()
        room = MAX_EVENT_DATA_BYTES - len(msgspec.json.encode({"stream": stream, "text": "", "ts": ts}))
        for piece in json_pieces(text, room):
            self.emit("log", {"stream": stream, "text": piece, "ts": ts})

    # waiting for acknowledgement -----------------------------------------------
    async def wait_acked(self, seq: int) -> None:
        """Until the event with `seq` is stored by the server; raises EventsRejected if it never will be."""
        async with self._acked:
            await self._acked.wait_for(lambda: self._acked_seq >= seq or self._rejected is not None)
        if self._acked_seq < seq and self._rejected is not None:
            raise self._rejected

    async def finished(self) -> None:
        """Until the final event is acknowledged (or rejected: then EventsRejected)."""
        if self._final_seq is None:
            raise RuntimeError(f"run {self.run_id}: no final event emitted")
        await self.wait_acked(self._final_seq)

    @property
    def finishing(self) -> bool:
        """The run's final event was emitted (the run ended here as far as the node is concerned)."""
        return self._final_seq is not None

    @property
    def paused(self) -> bool:
        """Log producers are held back until the server catches up."""
        return not self._room.is_set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, deadline: float) -> bool:
        """Give pending events up to `deadline` seconds to be acknowledged; whether all were."""
        target = self._next_seq - 1
        try:
            await asyncio.wait_for(self.wait_acked(target), deadline)
        except (TimeoutError, EventsRejected):
            return False
        return True

    async def close(self) -> None:
        """Stop sending; whatever is still pending is dropped (the caller flushed first)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # sending -------------------------------------------------------------------
    async def _send_loop(self) -> None:
        while self._rejected is None:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._final_seq is None and len(self._pending) < MAX_BATCH and self._pending[-1].type == "log":
                await asyncio.sleep(LINGER)
            try:
                batch, ack = await self._send_batch()
            except HTTPStatusError as exc:  # refused or too large: _send_batch retries anything else
                if exc.status_code == TOO_LARGE:
                    self._make_smaller()
                    continue
                log.error("run %s: the server refused its events: %s", self.run_id, exc)
                await self._set_rejected(EventsRejected(f"run {self.run_id}: {exc.detail}"))
                return
            del self._pending[: len(batch)]
            del self._sizes[: len(batch)]
            if len(self._pending) < MAX_PENDING // 2:
                self._room.set()
            self.cancel_requested = self.cancel_requested or ack.cancel_requested
            self.server_status = ack.status
            await self._set_acked(batch[-1].node_seq)

    @retrying(
        retry_hook(lambda exc: not _refused(exc), RETRY_CEILING), ceiling=RETRY_CEILING, initial=RETRY_INITIAL
    )
    async def _send_batch(self) -> tuple[list[m.NodeEventIn], m.NodeEventAck]:
        """The oldest pending events and the server's answer; a retry also takes events queued meanwhile."""
        length = self._batch_length()
        batch = self._pending[:length]
        if self._shipper is not None:
            item = m.RunEvents(run_id=self.run_id, events=batch, attempt=self.attempt)
            return batch, await self._shipper.send(item, sum(self._sizes[:length]))
        ack = await self._client.send(
            Calls.post_run_events(
                self.run_id, m.NodeEventBatch(node_id=self._node_id, events=batch, attempt=self.attempt)
            )
        )
        return batch, ack

    def _batch_length(self) -> int:
        total = 0
        for index, size in enumerate(self._sizes[:MAX_BATCH]):
            total += size
            if total > self._max_batch_bytes and index > 0:
                return index
        return min(len(self._pending), MAX_BATCH)

    def _make_smaller(self) -> None:
        """The server found a batch too large (413): send fewer events at a time, and once a batch
        is a single event, shrink that event's text. An event is never dropped, a final one least."""
        if self._batch_length() > 1:
            self._max_batch_bytes = max(MIN_BATCH_BYTES, self._max_batch_bytes // 2)
            log.warning(
                "run %s: batch too large for the server; sending at most %d bytes",
                self.run_id,
                self._max_batch_bytes,
            )
            return
        event = self._pending[0]
        shrunk = _shrunk(event)
        if shrunk == event:  # nothing left to cut: the server cannot take even this; keep retrying it
            self._max_batch_bytes = MIN_BATCH_BYTES
            return
        log.warning(
            "run %s: event %d (%s) too large for the server; its text was cut",
            self.run_id,
            event.node_seq,
            event.type,
        )
        self._pending[0] = shrunk
        self._sizes[0] = len(msgspec.json.encode(shrunk))

    async def _set_acked(self, seq: int) -> None:
        async with self._acked:
            self._acked_seq = max(self._acked_seq, seq)
            self._acked.notify_all()

    async def _set_rejected(self, exc: EventsRejected) -> None:
        self._pending.clear()
        self._sizes.clear()
        self._room.set()
        async with self._acked:
            self._rejected = exc
            self._acked.notify_all()


def _refused(exc: Exception) -> bool:
    """An answer that resending the same batch will not change (refused, or too large); anything
    else (5xx, 401, 429, transport errors, anything unexpected) is retried, so the loop never
    ends silently."""
    return isinstance(exc, HTTPStatusError) and exc.status_code in REFUSED_STATUSES | {TOO_LARGE}


def _shrunk(event: m.NodeEventIn) -> m.NodeEventIn:
    """The event with its long strings cut to SHRUNK_TEXT characters (marked as cut)."""
    data: dict[str, Any] = {}
    for key, value in event.data.items():
        if isinstance(value, str) and len(value) > SHRUNK_TEXT:
            value = value[:SHRUNK_TEXT] + " [cut: too large for the server]"
        elif isinstance(value, dict | list) and len(msgspec.json.encode(value)) > SHRUNK_TEXT:
            value = "[cut: too large for the server]"
        data[key] = value
    return m.NodeEventIn(node_seq=event.node_seq, type=event.type, data=data, at=event.at)
