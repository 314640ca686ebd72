"""Console sessions: a signed, expiring cookie instead of a token kept in the browser.

The console signs in once with an admin or viewer token (POST /api/v1/auth/login); the answer
sets `agentnodes_session` (HttpOnly, Secure, SameSite=Strict) holding the role, the token's
fingerprint, the expiry and a nonce, signed with a key derived from that token. So there is no
extra secret to configure, sessions survive restarts and work on every replica, and removing a
token from ADMIN_TOKEN or VIEWER_TOKEN ends its sessions. A change made through the cookie must
also carry `X-CSRF-Token`, a value derived from the session that only the page learns (from the
login answer or GET /api/v1/auth/session), which a cross-site form cannot send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import msgspec

from server.config import Settings
from server.identity import token_hash

SESSION_COOKIE = "agentnodes_session"
CSRF_HEADER = "x-csrf-token"
SessionRole = Literal["admin", "viewer"]


@dataclass(frozen=True)
class Session:
    role: SessionRole
    expires_at: float  # epoch seconds
    csrf_token: str


class _Claims(msgspec.Struct):
    r: SessionRole  # role
    f: str  # fingerprint of the token signed in with
    e: float  # expiry, epoch seconds
    n: str  # nonce


class SessionSigner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def issue(self, token: str, role: SessionRole) -> tuple[str, Session]:
        claims = _Claims(
            r=role, f=_fingerprint(token), e=time.time() + self._settings.session_ttl, n=secrets.token_hex(16)
        )
        payload = _b64(msgspec.json.encode(claims))
        key = _key(token)
        cookie = f"{payload}.{_b64(_sign(key, payload))}"
        return cookie, Session(role, claims.e, _csrf(key, claims.n))

    def verify(self, cookie: str) -> Session | None:
        payload, _, signature = cookie.partition(".")
        try:
            claims = msgspec.json.decode(_unb64(payload), type=_Claims)
            presented = _unb64(signature)
        except (ValueError, msgspec.DecodeError):
            return None
        if claims.e < time.time():
            return None
        tokens = self._settings.admin_tokens if claims.r == "admin" else self._settings.viewer_tokens
        for token in tokens:
            if hmac.compare_digest(_fingerprint(token), claims.f):
                key = _key(token)
                if hmac.compare_digest(_sign(key, payload), presented):
                    return Session(claims.r, claims.e, _csrf(key, claims.n))
        return None


def _fingerprint(token: str) -> str:
    return token_hash(token)[:16]


def _key(token: str) -> bytes:
    return hashlib.sha256(b"agentnodes-session\x00" + token.encode()).digest()


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def _csrf(key: bytes, nonce: str) -> str:
    return hmac.new(key, b"csrf\x00" + nonce.encode(), hashlib.sha256).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
