"""`apiserver` / `python -m server`: run the API server with uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys

from server.config import ConfigError, Settings

EXIT_CONFIG_ERROR = 2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="apiserver",
        description="Node-management API server: REST API, scheduler and web console. "
        "Configured by environment variables (APISERVER_HOST, APISERVER_PORT, DATABASE_URL, REDIS_URL, "
        "NODE_HEARTBEAT_INTERVAL, NODE_OFFLINE_AFTER, ADMIN_TOKEN, NODE_JOIN_TOKEN, APISERVER_DATA_DIR, "
        "RUN_LOST_GRACE, RUN_MAX_ATTEMPTS, MAX_BODY_SIZE, LOG_LEVEL); flags override them.",
    )
    parser.add_argument("--host", help="listen address (APISERVER_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (APISERVER_PORT, default 8080)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        settings = Settings.from_env()
        if args.host is not None:
            settings = dataclasses.replace(settings, host=args.host)
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
            settings = dataclasses.replace(settings, port=args.port)
        settings.check_listen_address()
    except ConfigError as exc:
        print(f"apiserver: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    import uvicorn

    from server.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
