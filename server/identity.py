"""Who is calling: admin, viewer, a node (by its own credential), the join token, or nobody.

Tokens of the three roles come from the settings (each variable may list several, for
rotation); a node's credential is a random token issued at registration, of which the server
keeps only the SHA-256 (`nodes.token_hash`). Console sessions are signed cookies (server.sessions).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.config import Settings
from server.repositories import nodes as node_repo

Role = Literal["admin", "viewer", "node", "join", "anonymous"]
NODE_TOKEN_PREFIX = "ant_"
CREDENTIAL_CACHE_SECONDS = 5.0  # how long a looked-up node credential is trusted without the database
CREDENTIAL_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class Principal:
    role: Role
    node_id: str | None = None  # the node whose credential was presented
    via_session: bool = False  # a console session cookie, not a bearer token
    trusted: bool = False  # protected mode: no credential is checked

    @property
    def actor(self) -> str:
        """Who made a change, for the audit log."""
        if self.role == "node":
            return f"node:{self.node_id}"
        if self.role == "join":
            return "join-token"
        return f"{self.role} (console)" if self.via_session else self.role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_node_token() -> str:
    return NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def matches_any(presented: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured token."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


class Authenticator:
    """Maps a bearer token to a principal; node credentials are looked up in the database and
    remembered briefly, so a node's requests cost no extra query."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self._sessionmaker = sessionmaker
        self._credentials: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def from_bearer(self, token: str) -> Principal | None:
        settings = self.settings
        if matches_any(token, settings.admin_tokens):
            return Principal("admin")
        if matches_any(token, settings.viewer_tokens):
            return Principal("viewer")
        if matches_any(token, settings.node_join_tokens):
            return Principal("join")
        if not token.startswith(NODE_TOKEN_PREFIX):
            return None
        node_id = await self._node_of(token_hash(token))
        return Principal("node", node_id=node_id) if node_id is not None else None

    async def _node_of(self, hashed: str) -> str | None:
        cached = self._credentials.get(hashed)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._sessionmaker() as session:
            node_id = await node_repo.node_of_token(session, hashed)
        if node_id is None:
            self._credentials.pop(hashed, None)
            return None
        self._credentials[hashed] = (node_id, time.monotonic() + CREDENTIAL_CACHE_SECONDS)
        self._credentials.move_to_end(hashed)
        while len(self._credentials) > CREDENTIAL_CACHE_SIZE:
            self._credentials.popitem(last=False)
        return node_id

    def forget_node(self, node_id: str) -> None:
        """Its credential was voided (reset, node deleted): stop trusting a cached lookup now."""
        for hashed in [h for h, (owner, _) in self._credentials.items() if owner == node_id]:
            del self._credentials[hashed]
