"""The nodemanager's side of the version skew policy (nodeapi.version).

Before it registers or heartbeats, the daemon asks the apiserver's version (retried until the
server answers). Afterwards every answer is checked too, since the server may be upgraded while
the node runs. Another minor version: one warning per server version. Another major version:
the daemon stops, leaving its runs running for the next start to adopt, and exits 1.
"""

from __future__ import annotations

import asyncio
import logging

from nodeapi.client import AsyncClient, Calls
from nodeapi.errors import ApiError, IncompatibleServer, NotFound
from nodeapi.version import VersionGate
from nodemanager.loops import DEFAULT_CEILING, retried, retry_hook, until_stopped

log = logging.getLogger("nodemanager")


class ServerVersionCheck:
    def __init__(self, stop: asyncio.Event) -> None:
        self.refused: IncompatibleServer | None = None
        self.gate = VersionGate("nodemanager", warn=log.warning, on_incompatible=self._refuse)
        self._stop = stop

    def _refuse(self, exc: IncompatibleServer) -> None:
        if self.refused is None:
            log.error("%s; stopping (the runs keep running and the next start adopts them)", exc)
        self.refused = exc
        self._stop.set()

    async def before_start(self, client: AsyncClient) -> None:
        """The server's version, asked until it answers (or the daemon is stopped)."""

        async def ask() -> None:
            try:
                await client.send(Calls.version())
            except NotFound:  # a server older than GET /version: not checked
                pass
            except IncompatibleServer:  # _refuse has stopped the daemon
                pass

        def retryable(exc: Exception) -> bool:
            return isinstance(exc, ApiError)

        call = retried(ask, retry_hook(retryable, DEFAULT_CEILING), ceiling=DEFAULT_CEILING)
        await until_stopped(self._stop, call())
