"""The node daemon, configured by environment variables. `nodemanager` / `python -m nodemanager`
reach it through nodemanager.__main__, which first makes sure the `node` extra is installed."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from nodeapi.client import AsyncClient
from nodeapi.logs import configure_logging
from nodeapi.retry import log_retries
from nodeapi.tls import trusted
from nodemanager.agent import Agent
from nodemanager.config import VARIABLES, ConfigError, NodeConfig
from nodemanager.credentials import Credentials
from nodemanager.metrics import NodeMetrics
from nodemanager.runtime import make_runtime
from nodemanager.runtime.base import RuntimeError_
from nodemanager.runtime.sandbox import host_network_warning
from nodemanager.skew import ServerVersionCheck

log = logging.getLogger("nodemanager")

USAGE = """usage: nodemanager [--help]

The node daemon: registers this machine with the apiserver, heartbeats, and runs the
runs assigned to it as Docker containers (or local processes with RUNTIME=process).
SIGTERM/SIGINT stop the daemon but leave running containers alone; the next start
adopts them.

Configuration (environment variables):
"""


def usage() -> str:
    width = max(len(name) for name, _, _ in VARIABLES)
    rows = [f"  {name:<{width}}  {meaning} [default: {default}]" for name, default, meaning in VARIABLES]
    return USAGE + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if args:
        sys.stderr.write(f"nodemanager: unexpected argument {args[0]!r}; it is configured by environment\n")
        sys.stderr.write(usage())
        return 2
    try:
        config = NodeConfig.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"nodemanager: configuration error: {exc}\n")
        return 2
    configure_logging(config.log_level, config.log_format)
    for chatty in ("httpx", "httpcore", "urllib3", "docker"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    log_retries(log)
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 130


async def serve(config: NodeConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        runtime = await make_runtime(
            config.runtime,
            config.node_id,
            config.workspace_dir,
            config.image_pull_policy,
            network_mode=config.docker_network,
            extra_capabilities=config.allow_capabilities,
        )
    except (RuntimeError_, ValueError) as exc:
        log.error("cannot start the %s runtime: %s", config.runtime, exc)
        return 1
    server = config.api_server_url
    if server.startswith("https://"):
        server = f"{server} (verified against {trusted(config.api_server_ca or True)})"
    log.info(
        "nodemanager %s starting: server %s, runtime %s, max %d concurrent runs",
        config.node_id,
        server,
        runtime.name,
        config.max_concurrent,
    )
    if runtime.name == "docker" and (warning := host_network_warning(config.docker_network)):
        log.warning("%s", warning)
    if config.api_server_ca is not None and not config.api_server_url.startswith("https://"):
        log.warning("API_SERVER_CA is set but API_SERVER_URL is not https://: the CA file is not used")
    credentials = Credentials(config.credential_path, config.node_join_token)
    versions = ServerVersionCheck(stop)
    client = AsyncClient(
        config.api_server_url,
        token=credentials.token,
        timeout=15.0,
        verify=config.api_server_ca or True,
        ca_hint="set API_SERVER_CA to the CA file (PEM) that signed the apiserver's certificate",
        version_gate=versions.gate,
    )
    metrics = NodeMetrics()
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_host, config.metrics_port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", config.metrics_host, config.metrics_port, exc)
            await client.aclose()
            await runtime.close()
            return 1
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, config.metrics_port)
    try:
        await versions.before_start(client)
        if not stop.is_set():
            await Agent(config, runtime, client, credentials, metrics).run(stop)
    finally:
        await client.aclose()
        await runtime.close()
    return 1 if versions.refused else 0
