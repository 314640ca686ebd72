"""The apiserver's edge: what every answer carries, and checks on the raw request target before
any routing.

Every HTTP answer, errors included, states the server's version (`X-Agentnodes-Version`), so
that clients check the skew policy (nodeapi.version) on whatever they call.

The ASGI `path` is percent-decoded before Litestar routes it, so `/api/v1/nodes/n2%2fenv-config`
would reach the env-config route of node `n2`. Ids never contain '/', '\\' or NUL, so a request
whose raw path carries any of them encoded is refused here with 400, and no handler sees it.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from nodeapi import __version__
from nodeapi.version import VERSION_HEADER
from server.errors import send_error_response

VERSION_HEADER_FIELD = (VERSION_HEADER.lower().encode(), __version__.encode())

# (encoded form, lower-cased; what it is)
REFUSED_ENCODINGS = ((b"%2f", "'/'"), (b"%5c", "'\\'"), (b"%00", "NUL"))


def path_problem(raw_path: bytes) -> str | None:
    """Why a raw request path (without the query string) is refused, or None."""
    if b"\x00" in raw_path:
        return "the request path contains a NUL character"
    lowered = raw_path.lower()
    for encoded, what in REFUSED_ENCODINGS:
        if encoded in lowered:
            return (
                f"the request path contains an encoded {what} ({encoded.decode().upper()}); "
                "no id contains one, so such a path names nothing"
            )
    return None


def guard_edge(app: ASGIApp) -> ASGIApp:
    """`app`, behind the raw-path check."""

    async def edge(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            problem = path_problem(raw.split(b"?", 1)[0])
            if problem is not None:
                await send_error_response(send, 400, problem)
                return
        await app(scope, receive, send)

    return edge


def stamp_version(app: ASGIApp) -> ASGIApp:
    """`app`, whose HTTP answers all carry the version header."""

    async def stamped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), VERSION_HEADER_FIELD]
            await send(message)

        await app(scope, receive, send_stamped)

    return stamped
