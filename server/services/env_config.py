"""Per-node environment config (proxy + env vars) injected by the node into every container."""

from __future__ import annotations

from nodeapi import models as m
from nodeapi import validation
from server.errors import Conflict, InvalidInput, NotFound
from server.repositories import env_config as repo
from server.repositories import nodes as node_repo
from server.services.audit import record
from server.services.context import ServiceContext
from server.services.mappers import env_config_to_wire, now_utc


def validate_env_config(config: m.EnvConfig) -> None:
    """Raises InvalidInput naming the bad field."""
    try:
        proxy = config.proxy
        validation.validate_proxy_settings(proxy.http_proxy, proxy.https_proxy, proxy.no_proxy)
        validation.validate_env(config.env, "env")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


class EnvConfigService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._sessionmaker = ctx.sessionmaker

    async def get(self, node_id: str) -> m.EnvConfig:
        async with self._sessionmaker() as session:
            if not await node_repo.exists(session, node_id):
                raise NotFound(f"node {node_id!r} not found")
            return env_config_to_wire(await repo.get(session, node_id))

    async def replace(
        self, node_id: str, config: m.EnvConfig, actor: str, if_match: int | None
    ) -> m.EnvConfig:
        validate_env_config(config)
        expected = config.resource_version if config.resource_version is not None else if_match
        proxy = {
            "http_proxy": config.proxy.http_proxy or None,
            "https_proxy": config.proxy.https_proxy or None,
            "no_proxy": config.proxy.no_proxy or None,
        }
        now = now_utc()
        async with self._sessionmaker.begin() as session:
            if not await node_repo.bump_version(session, node_id, now):
                raise NotFound(f"node {node_id!r} not found")
            if expected is not None:
                current = await repo.get(session, node_id)
                # 0 stands for "no config saved yet", so two first saves conflict like any other pair
                current_version = current.resource_version if current is not None else 0
                if current_version != expected:
                    raise Conflict(
                        f"the env config of node {node_id!r} was changed meanwhile (resource_version is "
                        f"{current_version}, the edit was based on {expected}); reload and retry",
                        extra={"resource_version": current_version},
                    )
            row = await repo.upsert(session, node_id, proxy, dict(config.env), now)
            details = {"proxy": proxy, "env_names": sorted(config.env)}
            await record(session, actor, "env_config.replace", "node", node_id, details)
        return env_config_to_wire(row)
