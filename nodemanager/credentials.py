"""The node's credential: the token the server answered at registration, kept in the state directory.

Until it has one the node presents NODE_JOIN_TOKEN, which only registers. The file (mode 0600,
written atomically) survives restarts, so a restarted node keeps acting as itself. When the
server refuses the stored token (an admin voided it with `nodectl nodes reset-credential`, or
the node was deleted) the node forgets it and registers again with the join token.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Credentials:
    def __init__(self, path: Path, join_token: str | None) -> None:
        self.path = path
        self._join_token = join_token
        self._node_token = self._read()

    @property
    def token(self) -> str | None:
        """What to send now: the node's own token, else the join token."""
        return self._node_token or self._join_token

    @property
    def has_node_token(self) -> bool:
        return self._node_token is not None

    def store(self, token: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(token + "\n")
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._node_token = token
        log.info("stored this node's credential in %s", self.path)

    def forget(self) -> None:
        """The server refused the stored token: register again with the join token."""
        self.path.unlink(missing_ok=True)
        self._node_token = None
        log.warning("the server refused this node's credential; registering again with the join token")

    def _read(self) -> str | None:
        try:
            token = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the node credential %s: %s", self.path, exc)
            return None
        return token or None
