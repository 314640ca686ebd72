"""Domain errors and the ONE place that turns any exception into a JSON error answer.

Services raise domain errors; they never build HTTP responses:

    DomainError                500  base; carries `detail` (human message) and optional `extra`
    ├── InvalidInput           400  a value breaks a rule (names the field and the rule)
    ├── Unauthorized           401  no or a wrong token
    ├── Forbidden              403  a valid token that may not do this
    ├── NotFound               404  the addressed object does not exist
    ├── Conflict               409  the object's state forbids the change (active runs, stale version)
    ├── PayloadTooLarge        413
    ├── TooManyRequests        429  a rate limit; carries `retry_after` (seconds), sent as Retry-After
    ├── Unavailable            503  a backend (database, queue) cannot be reached; retry later
    └── GatewayTimeout         504  a node did not answer in time

Every answer has the body of `nodeapi.models.ErrorBody`: {"status_code", "detail", "extra"}.
Litestar's own errors (validation, unknown route, method, body size), database and
queue outages (503) are mapped here too; anything else is logged and answered with a
generic 500. `send_error_response` writes the same body at the ASGI level, for the checks
that run before routing (server.edge).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import msgspec
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CannotConnectNowError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    SerializationException,
)
from litestar.types import ExceptionHandlersMap, Send
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError

from nodeapi.models import ErrorBody
from server.queue.base import QueueUnavailable
from server.secrets import SecretsUnavailable

log = logging.getLogger("server.errors")


class DomainError(Exception):
    status_code: ClassVar[int] = 500

    def __init__(self, detail: str, extra: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class PayloadTooLarge(DomainError):
    status_code = 413


class TooManyRequests(DomainError):
    status_code = 429

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail, {"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(DomainError):
    status_code = 503


class GatewayTimeout(DomainError):
    status_code = 504


def error_response(
    status_code: int, detail: str, extra: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status_code, detail=detail, extra=extra),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[ErrorBody]:
    headers = {"WWW-Authenticate": 'Bearer realm="apiserver"'} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": "1"}
    elif isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.status_code, exc.detail, exc.extra, headers)


async def send_error_response(send: Send, status_code: int, detail: str) -> None:
    """An ErrorBody answer straight on the ASGI channel (no request object exists yet)."""
    body = msgspec.json.encode(ErrorBody(status_code=status_code, detail=detail))
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    detail = exc.detail or "error"
    extra = exc.extra if isinstance(exc.extra, dict | list) else None
    if status == 400 and extra:
        detail = _validation_summary(detail, extra)
    elif isinstance(exc.__cause__, SerializationException):
        detail = f"request body is not valid JSON: {detail}"
    if status >= 500:
        log.error("HTTP %s: %s", status, detail)
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="apiserver"')
    return error_response(status, detail, extra, headers or None)


def _validation_summary(detail: str, extra: dict[str, Any] | list[Any]) -> str:
    """Fold Litestar's per-field messages into the human `detail`."""
    items = extra if isinstance(extra, list) else [extra]
    parts = []
    for item in items[:5]:
        if isinstance(item, dict) and item.get("message"):
            key = item.get("key")
            parts.append(f"{key}: {item['message']}" if key else str(item["message"]))
    return f"{detail}: {'; '.join(parts)}" if parts else detail


def _database_error(_: Request[Any, Any, Any], exc: SQLAlchemyError) -> Response[ErrorBody]:
    if _is_data_error(exc):
        # the database refused a value (e.g. PostgreSQL and NUL characters): the input's fault
        log.info("database refused a value: %s", getattr(exc, "orig", exc))
        return error_response(
            400, "a value in the request cannot be stored or compared (invalid characters?)"
        )
    if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or is_database_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        return error_response(503, "database unavailable, retry later", headers={"Retry-After": "1"})
    log.exception("database error", exc_info=exc)
    return error_response(500, "internal database error")


def _is_data_error(exc: SQLAlchemyError) -> bool:
    if isinstance(exc, DataError):
        return True
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code.startswith("22"):  # SQLSTATE class 22: data exception
            return True
    return False


# SQLSTATE classes of a database that is not (yet) there: connection exception, insufficient
# resources, operator intervention (shutting down, crash recovery: "cannot connect now")
UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
UNAVAILABLE_TYPES = (PostgresConnectionError, CannotConnectNowError, TooManyConnectionsError, OSError)


def is_database_unavailable(exc: BaseException) -> bool:
    """The database is down, restarting or refusing connections (not a bug, not bad input):
    looks through SQLAlchemy's wrapping to the driver's error and its causes."""
    seen: set[int] = set()
    candidate: BaseException | None = exc
    while candidate is not None and id(candidate) not in seen:
        seen.add(id(candidate))
        if isinstance(candidate, UNAVAILABLE_TYPES):
            return True
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES):
            return True
        if "database is locked" in str(candidate).lower():
            return True
        candidate = getattr(candidate, "orig", None) or candidate.__cause__ or candidate.__context__
    return False


def _backend_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    # raised outside SQLAlchemy's wrapping, e.g. asyncpg failing to open a pooled connection
    what = "queue" if isinstance(exc, QueueUnavailable) else "database"
    log.warning("%s unavailable: %s: %s", what, type(exc).__name__, exc)
    return error_response(503, f"{what} unavailable, retry later", headers={"Retry-After": "1"})


def _secrets_unavailable(_: Request[Any, Any, Any], exc: SecretsUnavailable) -> Response[ErrorBody]:
    log.error("stored secrets cannot be opened: %s", exc)
    return error_response(503, f"stored secrets cannot be opened: {exc}")


def _too_deep(_: Request[Any, Any, Any], exc: RecursionError) -> Response[ErrorBody]:
    # msgspec gives up on absurdly nested JSON with a RecursionError while decoding the body
    return error_response(400, "request body is nested too deeply")


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: _domain_error,
    PermissionDeniedException: _http_exception,
    HTTPException: _http_exception,
    SQLAlchemyError: _database_error,
    RecursionError: _too_deep,
    QueueUnavailable: _backend_unavailable,
    ConnectionError: _backend_unavailable,
    PostgresConnectionError: _backend_unavailable,
    CannotConnectNowError: _backend_unavailable,
    TooManyConnectionsError: _backend_unavailable,
    SecretsUnavailable: _secrets_unavailable,
    Exception: _unexpected,
}
