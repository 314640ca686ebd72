"""`apiserver` / `python -m server`: run the API server with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from nodeapi.logs import configure_logging
from nodeapi.retry import log_retries
from server.config import ConfigError, Settings

if TYPE_CHECKING:
    import uvicorn

EXIT_CONFIG_ERROR = 2
GRACEFUL_SHUTDOWN = 3  # seconds uvicorn gives open requests once long-polls have been answered


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="apiserver",
        description="Node-management API server: REST API, scheduler and web console. "
        "Configured by environment variables (APISERVER_HOST, APISERVER_PORT, DATABASE_URL, REDIS_URL, "
        "NODE_HEARTBEAT_INTERVAL, NODE_OFFLINE_AFTER, ADMIN_TOKEN, NODE_JOIN_TOKEN, APISERVER_DATA_DIR, "
        "RUN_LOST_GRACE, RUN_MAX_ATTEMPTS, RUN_MAX_LOG_BYTES, MAX_BODY_SIZE, HEARTBEAT_RATE_BURST, "
        "HEARTBEAT_RATE_PER_SECOND, LOG_LEVEL, TLS_CERT_FILE and TLS_KEY_FILE to serve HTTPS); "
        "flags override them.",
    )
    parser.add_argument("--host", help="listen address (APISERVER_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (APISERVER_PORT, default 8080)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    configure_logging(logging.INFO)
    try:
        settings = Settings.from_env()
        if args.host is not None:
            settings = settings.model_copy(update={"host": args.host})
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
            settings = settings.model_copy(update={"port": args.port})
        settings.check_listen_address()
    except ConfigError as exc:
        print(f"apiserver: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    configure_logging(settings.log_level, settings.log_format)
    log_retries(logging.getLogger("server.retry"))
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # aiosqlite logs every call with its arguments at DEBUG: statement parameters, secrets included
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))

    import uvicorn

    from server.app import create_app
    from server.components import build_components

    components = build_components(settings)
    app = create_app(components=components)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=settings.log_level.lower(),
        access_log=False,  # server.observability writes one line per request (DEBUG), with its id
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )
    _serve(config, on_exit=components.context.begin_shutdown)


def _serve(config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
    """uvicorn waits for open requests before it stops; on SIGTERM/SIGINT `on_exit` answers
    the long-polls (work channel, events wait) at once, so stopping takes moments."""
    import uvicorn

    class LongPollAwareServer(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self.loop is not None and not self.loop.is_closed():
                # the handler may interrupt the loop anywhere: let the loop run the wake-up
                self.loop.call_soon_threadsafe(on_exit)

    LongPollAwareServer(config).run()


if __name__ == "__main__":
    main()
