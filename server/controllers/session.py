"""/api/v1/auth: console sign-in and sign-out, and who the caller is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State

from nodeapi import models as m
from server.auth import auth_of, authenticate
from server.errors import Forbidden, Unauthorized
from server.openapi import errors
from server.sessions import SESSION_COOKIE, Session


def _session_cookie(value: str, max_age: int) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=True,  # browsers treat http://localhost and 127.0.0.1 as secure contexts too
        samesite="strict",
    )


def _info(session: Session) -> m.SessionInfo:
    expires = datetime.fromtimestamp(session.expires_at, UTC)
    return m.SessionInfo(role=session.role, csrf_token=session.csrf_token, expires_at=expires)


class SessionController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", status_code=200, opt=errors(401, 403))
    async def login(
        self, request: Request[None, None, State], data: m.LoginRequest
    ) -> Response[m.SessionInfo]:
        """Sign the console in with an admin or viewer token: sets a signed, expiring session
        cookie and answers the CSRF token that changes made through it must send."""
        auth = auth_of(request)
        principal = await auth.authenticator.from_bearer(data.token.strip())
        if principal is None:
            raise Unauthorized("invalid token")
        if principal.role not in ("admin", "viewer"):
            raise Forbidden("the console signs in with an admin or viewer token, not a node credential")
        cookie, session = auth.sessions.issue(data.token.strip(), principal.role)
        ttl = int(auth.settings.session_ttl)
        return Response(_info(session), cookies=[_session_cookie(cookie, ttl)])

    @post("/logout", status_code=204, opt=errors(401, 403), response_cookies=[_session_cookie("", 0)])
    async def logout(self, request: Request[None, None, State]) -> None:
        """End the console session (the cookie is cleared). A valid session must send its CSRF
        token (a cross-site form must not sign people out); an expired one is just cleared."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None and auth_of(request).sessions.verify(cookie) is not None:
            await authenticate(request)

    @get("/session", opt=errors(401))
    async def session(self, request: Request[None, None, State]) -> m.SessionInfo:
        """Who the caller is: role, and for a console session its CSRF token and expiry."""
        auth = auth_of(request)
        if auth.settings.protected_mode:
            return m.SessionInfo(role="admin", protected_mode=True)
        cookie = request.cookies.get(SESSION_COOKIE)
        if "authorization" not in request.headers and cookie is not None:
            session = auth.sessions.verify(cookie)
            if session is None:
                raise Unauthorized("the console session expired or is no longer valid; sign in again")
            return _info(session)
        principal = await authenticate(request)
        role: Any = principal.role if principal.role != "join" else "node"
        if role == "anonymous":
            if auth.settings.admin_tokens:
                raise Unauthorized("not signed in: send 'Authorization: Bearer <token>' or sign in")
            role = "admin"  # the admin API is open (without ADMIN_TOKEN)
        return m.SessionInfo(role=role)
