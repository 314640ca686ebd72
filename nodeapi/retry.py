"""What is worth retrying, for the retry loops of the nodemanager and nodectl (stamina).

Use as `stamina.retry_context(on=retry_delay, ...)`: stamina retries an error for which
`retry_delay` answers True (with its own exponential backoff and jitter) or a number of
seconds (the server's Retry-After), and re-raises any other at once.
"""

from __future__ import annotations

import logging

from nodeapi.errors import HTTPStatusError, TransportError

# statuses that may pass on their own: too early, overloaded, unavailable, upstream timeout
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """True when a later try may succeed: the server unreachable or slow, 5xx, 408, 429."""
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, HTTPStatusError) and (
        exc.status_code in TRANSIENT_STATUSES or exc.status_code >= 500
    )


def retry_delay(exc: Exception) -> bool | float:
    """stamina's `on` hook: the server's Retry-After when it sent one, else whether to retry."""
    if not is_transient(exc):
        return False
    if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
        return exc.retry_after
    return True


def log_retries(logger: logging.Logger, level: int = logging.WARNING) -> None:
    """Make every scheduled stamina retry in this process one line on `logger`, naming the
    retried call, the error, the attempt and the wait (instead of stamina's default record)."""
    import stamina.instrumentation

    def on_retry(details: stamina.instrumentation.RetryDetails) -> None:
        logger.log(
            level,
            "%s: %s; retry %d in %.1fs",
            details.name,
            describe(details.caused_by),
            details.retry_num,
            details.wait_for,
        )

    stamina.instrumentation.set_on_retry_hooks([on_retry])


def describe(exc: BaseException) -> str:
    """An error as one short line: its message, or its type when it has none."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:300] or type(exc).__name__
