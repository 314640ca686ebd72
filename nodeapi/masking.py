"""Secrets on the way out: the one place that decides what reads back as `***`.

Proxy URL passwords and `secret_env` values are masked in every answer, log line and audit
entry; plain `env` values are shown as they are. `is_masked` tells a value sent back unchanged
from a read (a PUT that sends `***` keeps the stored value).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# parts of a variable name that suggest a secret: such values belong in secret_env, not env
SECRET_NAME_HINTS = (
    "PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "APIKEY", "PRIVATE", "CREDENTIAL", "ACCESS_KEY",
)  # fmt: skip


def mask_url_password(url: str) -> str:
    """The URL with its password replaced by '***' (for logs, audit entries and answers)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>" if "@" in url else url
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def mask_values(values: Mapping[str, str]) -> dict[str, str]:
    """Every value replaced by `***`, the names kept."""
    return dict.fromkeys(values, MASK)


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(hint in upper for hint in SECRET_NAME_HINTS)


def url_password(url: str | None) -> str | None:
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def has_masked_password(url: str | None) -> bool:
    """The URL carries `***` where a read put the password."""
    return url_password(url) == MASK


def with_password_of(masked_url: str, stored_url: str | None) -> str | None:
    """`masked_url` with the password of `stored_url` in place of `***`; None when none is stored."""
    password = url_password(stored_url)
    if password is None:
        return None
    parts = urlsplit(masked_url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{hostport}"))
