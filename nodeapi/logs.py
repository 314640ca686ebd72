"""Structured logs for the apiserver and the nodemanager (structlog over the standard library).

Every record, ours or a library's (uvicorn, alembic, SQLAlchemy), goes through one chain:
the context bound for the current request (`request_id`, bound by the apiserver's middleware),
level, logger name, a UTC timestamp, and redaction; then JSON, one object a line, when stderr is
not a terminal (LOG_FORMAT=auto), or the console renderer on a terminal.

Redaction is the last line of defence, not the first: code never logs a secret on purpose.
It masks the value of any field whose name says it holds one, and bearer tokens, passwords in
URLs and `NAME=value` pairs of secret-looking names inside messages.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from nodeapi.masking import MASK

LogFormat = Literal["auto", "json", "console"]

SECRET_FIELD = re.compile(r"token|password|passwd|secret|authorization|api[_-]?key|credential", re.I)
_IN_TEXT = (
    # the scheme as HTTP writes it, then something token-sized: "bearer tokens" in prose stays
    (re.compile(r"(\b(?:Bearer|BEARER)\s+)[^\s\"',;]{8,}"), rf"\g<1>{MASK}"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s\"']+:)[^@\s\"']+@"), rf"\g<1>{MASK}@"),
    (
        re.compile(r"(?i)\b([A-Z0-9_]*(?:TOKEN|PASSWORD|SECRET|API_?KEY)[A-Z0-9_]*\s*[=:]\s*)[^\s\"',;]+"),
        rf"\g<1>{MASK}",
    ),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if key == "event":
            continue
        if SECRET_FIELD.search(key) and value not in (None, "", False):
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = redact_text(event)
    return event_dict


def _chain() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(level: str | int, log_format: LogFormat = "auto") -> None:
    """Route every logger of the process through structlog's formatter on stderr."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,  # after the traceback is text: a secret in an exception message is masked too
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*_chain(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
