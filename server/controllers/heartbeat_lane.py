"""The heartbeat's fast lane: `POST /api/v1/nodes/heartbeat` answered below Litestar's routing
when it changes nothing but the node's liveness (NodeService.liveness_heartbeat).

Most heartbeats of a fleet are such: the node repeats what the database holds, and the answer
is a liveness store update. Litestar's per-request machinery (routing, guards, dependency
injection, the body extractor, response objects) then costs several times the work itself, so
this ASGI step in front of it reads the body, checks the node's credential as `join_guard` does
(protected mode, or a node token), decodes the body with msgspec and asks the service. Anything
else (a join token, no or a wrong credential, a body that does not decode, a refusal, a report
that changed, a first sight) is handed to Litestar with the body replayed, untouched, and the
handler there does all it always did: its answers and errors are the API's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from nodeapi import models as m
from server.auth import Auth, parse_bearer
from server.errors import Unauthorized
from server.identity import Principal
from server.services.nodes import NodeService

HEARTBEAT_PATH = "/api/v1/nodes/heartbeat"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def heartbeat_lane(app: ASGIApp, nodes: NodeService, auth: Auth, max_body_size: int) -> ASGIApp:
    """`app`, with unchanged heartbeats answered before it."""
    decode = msgspec.json.Decoder(m.HeartbeatRequest).decode
    encode = msgspec.json.Encoder().encode

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        messages: list[ReceiveMessage] = []
        body = await _read_body(receive, messages, max_body_size)
        reply = None
        if body is not None:
            try:
                caller = await _node_caller(scope, auth)
            except Exception:  # the token lookup failed (database down): Litestar's path maps it
                caller = None
            if caller is not None:
                try:
                    request = decode(body)
                except (msgspec.MsgspecError, RecursionError):  # Litestar's path answers these
                    request = None
                if request is not None:
                    reply = await nodes.liveness_heartbeat(request, caller)
        if reply is None:
            await app(scope, _replay(messages, receive), send)
            return
        scope["path_template"] = HEARTBEAT_PATH  # the route label of the request count (server.observability)
        content = encode(reply)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    return lane


async def _read_body(receive: Receive, messages: list[ReceiveMessage], limit: int) -> bytes | None:
    """The whole body (every message kept in `messages`); None when it is not a plain one
    within `limit` bytes, which Litestar then answers."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Callable[[], Awaitable[ReceiveMessage]]:
    pending = list(messages)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _node_caller(scope: Scope, auth: Auth) -> Principal | None:
    """The caller when `join_guard` would let a node through on its own credential; else None."""
    if auth.settings.protected_mode:
        return Principal("node", trusted=True)
    header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    try:
        token = parse_bearer(header.decode("latin-1") if header is not None else None)
    except Unauthorized:  # Litestar's path answers it
        return None
    if token is None:
        return None
    principal = await auth.authenticator.from_bearer(token)
    return principal if principal is not None and principal.role == "node" else None
