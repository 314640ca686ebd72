"""Exceptions raised by the typed client.

ApiError
├── TransportError          the server could not be reached or did not answer
│   ├── RequestTimeout      no answer within the client timeout
│   ├── InvalidResponse     an answer this client cannot read (not JSON, not the expected shape)
│   └── TLSError            the TLS handshake failed
│       └── CertificateError    the server's certificate is not trusted
├── IncompatibleServer      the server is of another major version (nodeapi.version)
└── HTTPStatusError         the server answered 4xx/5xx; `.status_code`, `.detail`, `.retry_after`
    ├── BadRequest          400, 413, 422, 429
    ├── Unauthorized        401
    │   └── Forbidden       403
    ├── NotFound            404
    ├── Conflict            409
    ├── GatewayTimeout      504 (e.g. a node did not answer a proxy test in time)
    └── ServerError         other 5xx
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base of every client error."""


class TransportError(ApiError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class RequestTimeout(TransportError):
    pass


class InvalidResponse(TransportError):
    """The server's answer is not what this client can read: not JSON, or not the expected
    shape (a proxy's error page in the way, or a server of an incompatible version)."""

    def __init__(self, url: str, reason: str) -> None:
        ApiError.__init__(self, f"unexpected answer from {url}: {reason}")
        self.url = url
        self.reason = reason


class TLSError(TransportError):
    pass


class CertificateError(TLSError):
    pass


class IncompatibleServer(ApiError):
    """The apiserver is of another major version than this program: refused before its answer is
    used (the skew policy of nodeapi.version)."""

    def __init__(self, program: str, client_version: str, server_version: str) -> None:
        super().__init__(
            f"the apiserver is version {server_version} and this {program} {client_version}: another "
            f"major version, which this {program} cannot work with; use a {program} of the server's "
            "major version (docs/operations.md#version-skew)"
        )
        self.program = program
        self.client_version = client_version
        self.server_version = server_version


class HTTPStatusError(ApiError):
    def __init__(
        self, status_code: int, detail: str, extra: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.extra = extra
        self.retry_after = retry_after  # seconds, from a Retry-After header (429, 503)


class BadRequest(HTTPStatusError):
    pass


class Unauthorized(HTTPStatusError):
    pass


class Forbidden(Unauthorized):
    """403: authenticated, but not allowed (another node's run, a viewer changing something)."""


class NotFound(HTTPStatusError):
    pass


class Conflict(HTTPStatusError):
    pass


class GatewayTimeout(HTTPStatusError):
    pass


class ServerError(HTTPStatusError):
    pass


def error_for_status(
    status_code: int, detail: str, extra: Any = None, retry_after: float | None = None
) -> HTTPStatusError:
    cls: type[HTTPStatusError]
    if status_code == 403:
        cls = Forbidden
    elif status_code == 401:
        cls = Unauthorized
    elif status_code == 404:
        cls = NotFound
    elif status_code == 409:
        cls = Conflict
    elif status_code == 504:
        cls = GatewayTimeout
    elif status_code >= 500:
        cls = ServerError
    else:
        cls = BadRequest
    return cls(status_code, detail, extra, retry_after)
