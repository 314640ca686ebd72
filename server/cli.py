"""The apiserver program: serve (the default), `migrate` the database, or `check-config`.

`apiserver` / `python -m server` reach it through server.__main__, which first makes sure the
`server` extra is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from nodeapi import __version__
from nodeapi.logs import configure_logging
from nodeapi.retry import log_retries
from server.config import ConfigError, Settings

if TYPE_CHECKING:
    import uvicorn

    from server.migrations import MigrationResult

EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
GRACEFUL_SHUTDOWN = 3  # seconds uvicorn gives open requests once long-polls have been answered
# a developer's switch, not a setting: the file the whole process's cProfile is written to at exit
PROFILE_VARIABLE = "APISERVER_PROFILE"

log = logging.getLogger("server.cli")

DESCRIPTION = (
    "Node-management API server: REST API, scheduler and web console. Configured by environment "
    "variables (APISERVER_HOST, APISERVER_PORT, DATABASE_URL, REDIS_URL, NODE_HEARTBEAT_INTERVAL, "
    "NODE_OFFLINE_AFTER, ADMIN_TOKEN, VIEWER_TOKEN, NODE_JOIN_TOKEN, APISERVER_DATA_DIR, RUN_LOST_GRACE, "
    "RUN_MAX_ATTEMPTS, RUN_MAX_LOG_BYTES, RUN_RETENTION, AUDIT_RETENTION, MAX_BODY_SIZE, "
    "HEARTBEAT_RATE_BURST, HEARTBEAT_RATE_PER_SECOND, "
    "LOG_LEVEL, TLS_CERT_FILE and TLS_KEY_FILE to serve HTTPS; all of them in the README); flags "
    "override them. Without a command it serves."
)


def _listen_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--host", default=default, help="listen address (APISERVER_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=default, help="listen port (APISERVER_PORT, default 8080)"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="apiserver", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"apiserver {__version__}")
    _listen_flags(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # SUPPRESS: a flag given before the command is not reset by the command's own default
    serve = commands.add_parser("serve", help="serve the API, the scheduler and the console (the default)")
    _listen_flags(serve, argparse.SUPPRESS)
    commands.add_parser(
        "migrate",
        help="upgrade the database (DATABASE_URL) to this version's schema, then exit",
        description="Upgrade the database to this version's schema and exit: 0 done (or nothing to do), "
        "1 failed, 2 invalid settings. The server also migrates at start; this does it on its own, "
        "before the apiservers of a new version start (docs/operations.md, Upgrades).",
    )
    check = commands.add_parser(
        "check-config",
        help="validate the settings (environment and flags), then exit: 0 valid, 2 invalid",
        description="Validate every setting as the server would at start, without opening the database "
        "or the queue, and exit: 0 valid, 2 invalid (the message names the variable).",
    )
    _listen_flags(check, argparse.SUPPRESS)
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings with the flags applied; ConfigError naming the variable or flag at fault."""
    settings = Settings.from_env()
    if args.host is not None:
        settings = settings.model_copy(update={"host": args.host})
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
        settings = settings.model_copy(update={"port": args.port})
    return settings


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    configure_logging(logging.INFO)
    try:
        settings = _settings(args)
        if args.command != "migrate":
            settings.check_listen_address()
    except ConfigError as exc:
        print(f"apiserver: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    configure_logging(settings.log_level, settings.log_format)
    log_retries(logging.getLogger("server.retry"))
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # aiosqlite logs every call with its arguments at DEBUG: statement parameters, secrets included
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))

    if args.command == "check-config":
        print(f"apiserver: configuration valid ({_summary(settings)})")
        return
    if args.command == "migrate":
        sys.exit(_migrate(settings))
    _run_server(settings)


def _summary(settings: Settings) -> str:
    from sqlalchemy import make_url

    database = make_url(settings.database_url).render_as_string(hide_password=True)
    queue = "redis" if settings.redis_url else "in-process"
    auth = "tokens" if settings.uses_tokens else "protected mode, no tokens"
    scheme = "https" if settings.tls else "http"
    return f"{scheme}://{settings.host}:{settings.port}, database {database}, queue {queue}, {auth}"


def _migrate(settings: Settings) -> int:
    from sqlalchemy import make_url

    from server.migrations import SchemaNewerThanCode

    database = make_url(settings.database_url).render_as_string(hide_password=True)
    try:
        result = asyncio.run(_upgrade(settings))
    except SchemaNewerThanCode as exc:
        print(f"apiserver: cannot migrate {database}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # the boundary: one line, the traceback only at DEBUG
        log.debug("migration failed", exc_info=True)
        print(f"apiserver: migrating {database} failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if result.before == result.after:
        print(f"apiserver: {database} is at schema revision {result.after}; nothing to do")
    else:
        print(f"apiserver: migrated {database} from {result.before or 'an empty database'} to {result.after}")
    return 0


async def _upgrade(settings: Settings) -> MigrationResult:
    from server.db.engine import create_engine
    from server.migrations import run_migrations

    engine = create_engine(settings)
    try:
        return await run_migrations(engine)
    finally:
        await engine.dispose()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def _run_server(settings: Settings) -> None:
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

        async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn re-raises the stop signal once serving ends, so a profile is written in here
            profile_path = os.environ.get(PROFILE_VARIABLE)
            if not profile_path:
                await super()._serve(sockets)
                return
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            try:
                await super()._serve(sockets)
            finally:
                profiler.disable()
                profiler.dump_stats(profile_path)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self.loop is not None and not self.loop.is_closed():
                # the handler may interrupt the loop anywhere: let the loop run the wake-up
                self.loop.call_soon_threadsafe(on_exit)

    LongPollAwareServer(config).run()
