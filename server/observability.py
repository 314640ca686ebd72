"""Every HTTP request: a request id in the log context and the response, and a count by route.

The id is the caller's `X-Request-Id` when it is a sane token (so a trace can cross a proxy or a
client's retries), else a fresh one; every log line written while the request is handled carries
it as `request_id`. Requests are counted by route template (`/api/v1/nodes/{node_id}`), never
by raw path, so the metric's label set stays bounded whatever ids callers send.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars

from server.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
UNMATCHED = "unmatched"  # no route: 404s of arbitrary paths share one label

access_log = logging.getLogger("server.access")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _SANE_ID.match(value):
            return value.decode("ascii")
    return uuid.uuid4().hex[:16]


def observe_requests(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    """`app`, with request ids, per-route request counts and a DEBUG access log line."""

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        status = 500  # what the server answers if the app fails before it starts a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        with bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                route = scope.get("path_template") or UNMATCHED
                metrics.http_requests.labels(method=scope["method"], route=route, code=str(status)).inc()
                if access_log.isEnabledFor(logging.DEBUG):
                    access_log.debug(
                        "%s %s %d %.1fms",
                        scope["method"],
                        route,
                        status,
                        (time.perf_counter() - started) * 1000,
                    )

    return observed
