"""GET /api/v1/watch/nodes: the live node stream (server-sent events) the console updates from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from server.auth import read_guard
from server.services.node_feed import FeedEvent
from server.services.nodes import NodeService

RETRY_MS = 2000  # how long EventSource waits before it reconnects

LastEventId = Annotated[
    str | None,
    Parameter(
        header="Last-Event-ID",
        required=False,
        max_length=64,
        description="the id of the last event received; a reconnect resumes after it when it can",
    ),
]


Since = Annotated[
    str | None,
    Parameter(
        max_length=64,
        description="a node list's `stream_position`: start with every change after that list was read",
    ),
]


def _message(event: FeedEvent) -> ServerSentEventMessage:
    if event.kind == "ping":
        return ServerSentEventMessage(data=None, comment="keepalive")
    if event.kind == "node":
        data = msgspec.json.encode(event.data).decode()
    elif event.kind == "deleted":
        data = msgspec.json.encode({"id": event.node_id}).decode()
    else:  # hello, resync
        data = "{}"
    retry = RETRY_MS if event.kind == "hello" else None
    return ServerSentEventMessage(data=data, event=event.kind, id=event.event_id, retry=retry)


async def _messages(events: AsyncIterator[FeedEvent]) -> AsyncIterator[ServerSentEventMessage]:
    async for event in events:
        yield _message(event)


class WatchController(Controller):
    path = "/api/v1/watch"
    tags = ["nodes"]

    @get("/nodes", guards=[read_guard])
    async def watch_nodes(
        self, nodes: NodeService, last_event_id: LastEventId = None, since: Since = None
    ) -> ServerSentEvent:
        """Server-sent events, one per node change: `node` (the node's status, load, labels,
        schedulability and capacity as they are now), `deleted`, and `resync` when changes were
        missed (reload what you show). `hello` opens every stream; a comment keeps it alive."""
        return ServerSentEvent(_messages(nodes.watch(last_event_id or since)))
