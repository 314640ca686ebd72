"""Bearer-token guards.

- `admin_guard`: admin API (nodes, runs, env config, audit). Needs ADMIN_TOKEN when it is set.
- `node_guard`: what a NodeManager calls (heartbeat, work channel, node events, command
  results). Accepts NODE_JOIN_TOKEN or ADMIN_TOKEN once either is set.
With no token configured (protected mode: loopback only) both are open.
Health endpoints and the console page carry no guard.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from server.config import Settings
from server.errors import Forbidden, Unauthorized

ACTOR_KEY = "actor"
SETTINGS_KEY = "settings"  # the app state's only entry


def _settings(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    settings: Settings = connection.app.state[SETTINGS_KEY]
    return settings


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header; expected 'Bearer <token>'")
    return token.strip()


def _matches(presented: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(presented.encode(), expected.encode())


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    settings = _settings(connection)
    if not settings.admin_token:
        connection.state[ACTOR_KEY] = "admin" if settings.protected_mode else "anonymous"
        return
    token = _bearer(connection)
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <ADMIN_TOKEN>'")
    if _matches(token, settings.admin_token):
        connection.state[ACTOR_KEY] = "admin"
        return
    if _matches(token, settings.node_join_token):
        raise Forbidden("the node join token may not use the admin API")
    raise Unauthorized("invalid token")


def node_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    settings = _settings(connection)
    if settings.protected_mode:
        connection.state[ACTOR_KEY] = "node"
        return
    token = _bearer(connection)
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <NODE_JOIN_TOKEN>'")
    if _matches(token, settings.node_join_token):
        connection.state[ACTOR_KEY] = "node"
    elif _matches(token, settings.admin_token):
        connection.state[ACTOR_KEY] = "admin"
    else:
        raise Unauthorized("invalid token")


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Who made the request, for the audit log (set by the guards)."""
    return str(connection.state.get(ACTOR_KEY, "anonymous"))
