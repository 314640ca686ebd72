"""Per-invocation state: which server to talk to, and a lazily opened API client.

The client checks the version every answer states (nodeapi.version): another minor version is
one warning, another major version is refused. Before its first change (any call but a GET)
nodectl asks the server's version, so that a change is refused before it is made.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from nodectl import config
from nodectl.errors import UsageError

if TYPE_CHECKING:
    from nodeapi.client import Call, Client

T = TypeVar("T")
CA_HINT = "pass --ca or set NODECTL_CA"
PAGE_SIZE = 10_000  # the API's maximum page; fewer round trips for big fleets


@dataclass
class Session:
    server_flag: str | None = None
    token_flag: str | None = None
    context_flag: str | None = None
    request_timeout: float = 30.0
    ca_flag: str | None = None
    _client: Client | None = field(default=None, repr=False)
    _target: config.Target | None = field(default=None, repr=False)
    _version_known: bool = field(default=False, repr=False)
    _version_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def target(self) -> config.Target:
        if self._target is None:
            try:
                self._target = config.resolve(
                    self.server_flag, self.token_flag, self.context_flag, ca_flag=self.ca_flag
                )
            except config.ConfigError as exc:
                raise UsageError(str(exc)) from exc
        return self._target

    def client(self) -> Client:
        if self._client is None:
            from nodeapi.client import Client
            from nodeapi.tls import CAFileError
            from nodeapi.version import VersionGate
            from nodectl.output import warn

            target = self.target()
            try:
                self._client = Client(
                    target.server,
                    target.token,
                    timeout=self.request_timeout,
                    verify=target.ca or True,
                    ca_hint=CA_HINT,
                    version_gate=VersionGate("nodectl", warn=warn),
                )
            except CAFileError as exc:
                raise UsageError(f"{target.ca_source}: {exc}") from exc
        return self._client

    def send(self, call: Call[T]) -> T:
        client = self.client()
        if call.method != "GET":
            self._learn_server_version(client)
        return client.send(call)

    def _learn_server_version(self, client: Client) -> None:
        """Ask the server's version once, so that the version gate refuses a change before it is sent."""
        from nodeapi.client import Calls
        from nodeapi.errors import HTTPStatusError

        with self._version_lock:
            if self._version_known or (client.version_gate and client.version_gate.server_version):
                return
            # a server older than GET /version answers 404 and states no version: it is not checked
            with contextlib.suppress(HTTPStatusError):
                client.send(Calls.version())
            self._version_known = True

    def fetch_all(self, make_call: Callable[[int, int], Call[Any]]) -> tuple[list[Any], int]:
        """Every item of a paginated list; make_call(limit, offset) builds one page's call."""
        items: list[Any] = []
        total = 0
        for _ in range(100_000):  # bound: far above any realistic page count
            page = self.send(make_call(PAGE_SIZE, len(items)))
            items.extend(page.items)
            total = page.total
            if not page.items or len(items) >= page.total:
                break
        return items, total

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
