"""Secrets at rest: proxy credentials and `secret_env`, sealed before they reach the database.

With SECRETS_KEY set (Fernet keys, comma-separated) a sealed value is `fernet:<token>`: the
first key encrypts, every key decrypts, so a key is rotated by putting the new one first and
keeping the old one behind it until every value was written again. Without SECRETS_KEY a sealed
value is `plain:<json>` and the server logs one warning at start. Sealed values are opened only
to reveal them to an admin (audited) and to hand them to the node that runs with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("server.secrets")

FERNET_PREFIX = "fernet:"
PLAIN_PREFIX = "plain:"


class SecretsUnavailable(Exception):
    """A sealed value cannot be opened: it was encrypted with a key the server does not have."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def warn_if_plain(self) -> None:
        if self._fernet is None:
            log.warning(
                "SECRETS_KEY is not set: proxy credentials and secret_env are stored unencrypted "
                "in the database (see docs/security.md)"
            )

    def seal(self, data: dict[str, Any]) -> str | None:
        """The sealed form of `data`; None for nothing to keep (an empty dict)."""
        if not data:
            return None
        raw = msgspec.json.encode(data)
        if self._fernet is None:
            return PLAIN_PREFIX + raw.decode()
        return FERNET_PREFIX + self._fernet.encrypt(raw).decode()

    def open(self, sealed: str | None) -> dict[str, Any]:
        if not sealed:
            return {}
        if sealed.startswith(PLAIN_PREFIX):
            raw = sealed.removeprefix(PLAIN_PREFIX).encode()
        elif sealed.startswith(FERNET_PREFIX):
            if self._fernet is None:
                raise SecretsUnavailable("secrets are stored encrypted, but SECRETS_KEY is not set")
            try:
                raw = self._fernet.decrypt(sealed.removeprefix(FERNET_PREFIX).encode())
            except InvalidToken:
                raise SecretsUnavailable(
                    "secrets were encrypted with a key that is not in SECRETS_KEY"
                ) from None
        else:
            raise SecretsUnavailable("a stored secret has an unknown format")
        value = msgspec.json.decode(raw)
        return value if isinstance(value, dict) else {}


def sealed_with_names(box: SecretBox, names: Sequence[str], data: dict[str, Any]) -> dict[str, Any]:
    """What a secrets column holds: the names in clear (shown masked on reads), the values sealed."""
    if not names and not any(data.values()):
        return {}
    return {"names": sorted(names), "sealed": box.seal(data)}
