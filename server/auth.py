"""Route guards: who may call what.

| guard          | routes                                         | who passes                              |
|----------------|------------------------------------------------|-----------------------------------------|
| `read_guard`   | GET of the admin API (nodes, runs, audit, ...) | admin, viewer                           |
| `admin_guard`  | every change of the admin API                  | admin                                   |
| `node_guard`   | a node's work channel, events, command results | that node's own credential              |
| `join_guard`   | heartbeat                                      | a node's credential, or the join token  |

Credentials: a bearer token (ADMIN_TOKEN, VIEWER_TOKEN, NODE_JOIN_TOKEN, or a node token), or a
console session cookie (admin or viewer; its changes also need the X-CSRF-Token header). A node
token acts only for its own node: a `node_id` in the path must be its own, and services check
the runs it reports on. In protected mode (neither ADMIN_TOKEN nor NODE_JOIN_TOKEN set; loopback
only) no credential is checked. Without ADMIN_TOKEN outside protected mode the admin API is open
(the server warns at start). Health probes, the console's files and the OpenAPI schema are open.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from server.config import Settings
from server.errors import Forbidden, Unauthorized
from server.identity import Authenticator, Principal
from server.sessions import CSRF_HEADER, SESSION_COOKIE, SessionSigner

AUTH_KEY = "auth"  # the app state's only entry
PRINCIPAL_KEY = "principal"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Connection = ASGIConnection[Any, Any, Any, Any]


@dataclass(frozen=True)
class Auth:
    settings: Settings
    authenticator: Authenticator
    sessions: SessionSigner


def auth_of(connection: Connection) -> Auth:
    auth: Auth = connection.app.state[AUTH_KEY]
    return auth


def principal_of(connection: Connection) -> Principal:
    """Who made the request (set by the guards)."""
    principal: Principal = connection.state.get(PRINCIPAL_KEY, Principal("anonymous"))
    return principal


def actor_of(connection: Connection) -> str:
    return principal_of(connection).actor


def bearer_token(connection: Connection) -> str | None:
    return parse_bearer(connection.headers.get("authorization"))


def parse_bearer(header: str | None) -> str | None:
    """The token of an Authorization header; None without one; Unauthorized when malformed."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header; expected 'Bearer <token>'")
    return token.strip()


async def authenticate(connection: Connection) -> Principal:
    """The caller's principal; Unauthorized for a wrong token or an expired or forged session."""
    auth = auth_of(connection)
    token = bearer_token(connection)
    if token is not None:
        principal = await auth.authenticator.from_bearer(token)
        if principal is None:
            raise Unauthorized("invalid token")
    elif (cookie := connection.cookies.get(SESSION_COOKIE)) is not None:
        session = auth.sessions.verify(cookie)
        if session is None:
            raise Unauthorized("the console session expired or is no longer valid; sign in again")
        principal = Principal(session.role, via_session=True)
        if connection.scope.get("method") not in SAFE_METHODS:
            presented = connection.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
                raise Forbidden("missing or wrong X-CSRF-Token for a change made with a session cookie")
    else:
        principal = Principal("anonymous")
    connection.state[PRINCIPAL_KEY] = principal
    return principal


def _trusted(connection: Connection, role: str) -> bool:
    """Protected mode trusts everyone; without ADMIN_TOKEN the admin API is open."""
    settings = auth_of(connection).settings
    if settings.protected_mode:
        connection.state[PRINCIPAL_KEY] = Principal("admin" if role != "node" else "node", trusted=True)
        return True
    return False


async def read_guard(connection: Connection, _: BaseRouteHandler) -> None:
    if _trusted(connection, "admin"):
        return
    principal = await authenticate(connection)
    if principal.role in ("admin", "viewer"):
        return
    _refuse(connection, principal, "read")


async def admin_guard(connection: Connection, _: BaseRouteHandler) -> None:
    if _trusted(connection, "admin"):
        return
    principal = await authenticate(connection)
    if principal.role == "admin":
        return
    if principal.role == "viewer":
        raise Forbidden("the viewer role may only read; this change needs an admin token")
    _refuse(connection, principal, "change")


def _refuse(connection: Connection, principal: Principal, what: str) -> None:
    settings = auth_of(connection).settings
    if principal.role == "anonymous":
        if not settings.admin_tokens:  # the admin API is open (a warning said so at start)
            connection.state[PRINCIPAL_KEY] = Principal("admin")
            return
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or sign in")
    if principal.role in ("node", "join"):
        raise Forbidden("node credentials may not use the admin API")
    raise Forbidden(f"not allowed to {what} this")


async def join_guard(connection: Connection, _: BaseRouteHandler) -> None:
    if _trusted(connection, "node"):
        return
    principal = await authenticate(connection)
    if principal.role in ("node", "join"):
        return
    _refuse_node_route(principal)


async def node_guard(connection: Connection, _: BaseRouteHandler) -> None:
    if _trusted(connection, "node"):
        return
    principal = await authenticate(connection)
    if principal.role != "node":
        _refuse_node_route(principal)
    path_node = connection.path_params.get("node_id")
    if path_node is not None and path_node != principal.node_id:
        raise Forbidden(f"a node token acts only for its own node ({principal.node_id}), not {path_node!r}")


def _refuse_node_route(principal: Principal) -> None:
    if principal.role == "anonymous":
        raise Unauthorized("authentication required: send 'Authorization: Bearer <node token>'")
    if principal.role == "join":
        raise Forbidden("the join token only registers nodes: use the node token the registration answered")
    raise Forbidden("only a node's own credential may use the node API; admin and viewer tokens may not")


def caller_node(connection: Connection) -> str | None:
    """The node whose credential made the request; None when none is checked (protected mode)."""
    principal = principal_of(connection)
    return None if principal.trusted else principal.node_id
