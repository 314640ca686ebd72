"""Per-node environment config (proxy, env vars, secret env vars) the node injects into every
container it starts.

Proxy URL passwords and `secret_env` values are secrets: the database holds them sealed
(server.secrets), every read shows them as `***`, and only an admin's `?reveal=true` (audited)
and the node's own work channel get them in clear. A PUT that sends `***` back keeps the stored
value, so a config read, edited and written back loses nothing.
"""

from __future__ import annotations

from typing import Any

from nodeapi import models as m
from nodeapi import validation
from nodeapi.masking import MASK, has_masked_password, mask_url_password, mask_values, with_password_of
from server.errors import Conflict, InvalidInput, NotFound
from server.repositories import env_config as repo
from server.repositories import nodes as node_repo
from server.secrets import SecretBox, sealed_with_names
from server.services.audit import record
from server.services.context import ServiceContext
from server.services.mappers import utc

PROXY_URLS = ("http_proxy", "https_proxy")


def env_config_view(row: Any | None, box: SecretBox, *, reveal: bool = False) -> m.EnvConfig:
    """The wire form of a stored config (resource_version 0 for a node that has none yet);
    secrets masked unless `reveal`."""
    if row is None:
        return m.EnvConfig(resource_version=0)
    proxy = dict(row.proxy or {})
    secrets = row.secrets or {}
    secret_env = mask_values(dict.fromkeys(secrets.get("names", []), ""))
    if reveal:
        opened = box.open(secrets.get("sealed"))
        proxy.update({name: url for name, url in (opened.get("proxy") or {}).items() if url})
        secret_env = dict(opened.get("secret_env") or {})
    return m.EnvConfig(
        proxy=m.ProxyConfig(
            http_proxy=proxy.get("http_proxy"),
            https_proxy=proxy.get("https_proxy"),
            no_proxy=proxy.get("no_proxy"),
        ),
        env=dict(row.env or {}),
        secret_env=secret_env,
        resource_version=row.resource_version,
        updated_at=utc(row.updated_at),
    )


def validate_env_config(config: m.EnvConfig) -> None:
    """Raises InvalidInput naming the bad field."""
    try:
        proxy = config.proxy
        validation.validate_proxy_settings(proxy.http_proxy, proxy.https_proxy, proxy.no_proxy)
        validation.validate_env(config.env, "env")
        validation.validate_env(config.secret_env, "secret_env")
        validation.validate_env_total(config.env, config.secret_env)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


class EnvConfigService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._sessionmaker = ctx.sessionmaker
        self._box = ctx.secrets

    async def get(self, node_id: str, *, reveal: bool = False, actor: str = "admin") -> m.EnvConfig:
        async with self._sessionmaker.begin() as session:
            if not await node_repo.exists(session, node_id):
                raise NotFound(f"node {node_id!r} not found")
            config = env_config_view(await repo.get(session, node_id), self._box, reveal=reveal)
            if reveal:
                await record(session, actor, "env_config.reveal", "node", node_id, {})
        return config

    async def replace(
        self, node_id: str, config: m.EnvConfig, actor: str, if_match: int | None
    ) -> m.EnvConfig:
        validate_env_config(config)
        expected = config.resource_version if config.resource_version is not None else if_match
        now = self._ctx.clock.now()
        async with self._sessionmaker.begin() as session:
            if not await node_repo.bump_version(session, node_id, now):
                raise NotFound(f"node {node_id!r} not found")
            current = await repo.get(session, node_id)
            if expected is not None:
                # 0 stands for "no config saved yet", so two first saves conflict like any other pair
                current_version = current.resource_version if current is not None else 0
                if current_version != expected:
                    raise Conflict(
                        f"the env config of node {node_id!r} was changed meanwhile (resource_version is "
                        f"{current_version}, the edit was based on {expected}); reload and retry",
                        extra={"resource_version": current_version},
                    )
            stored = env_config_view(current, self._box, reveal=True)
            urls = proxy_urls(config.proxy, stored.proxy)
            secret_env = _kept(config.secret_env, stored.secret_env)
            masked_proxy: dict[str, str | None] = {
                name: mask_url_password(url) if url else None for name, url in urls.items()
            }
            masked_proxy["no_proxy"] = config.proxy.no_proxy or None
            secrets = sealed_with_names(
                self._box, list(secret_env), {"proxy": urls, "secret_env": secret_env}
            )
            row = await repo.upsert(session, node_id, masked_proxy, dict(config.env), secrets, now)
            details = {
                "proxy": masked_proxy,
                "env_names": sorted(config.env),
                "secret_env_names": sorted(secret_env),
            }
            await record(session, actor, "env_config.replace", "node", node_id, details)
        return env_config_view(row, self._box)


def proxy_urls(given: m.ProxyConfig, stored: m.ProxyConfig) -> dict[str, str | None]:
    """The proxy URLs to keep: as given, with a `***` password replaced by the stored one."""
    urls: dict[str, str | None] = {}
    for name in PROXY_URLS:
        url = getattr(given, name) or None
        if url and has_masked_password(url):
            url = with_password_of(url, getattr(stored, name))
            if url is None:
                raise InvalidInput(
                    f"proxy.{name} has the password {MASK}, but no password is stored to keep; send it"
                )
        urls[name] = url
    return urls


def _kept(given: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """`given`, with a value of `***` replaced by the stored value of that name."""
    values = {}
    for name, value in given.items():
        if value == MASK:
            if name not in stored:
                raise InvalidInput(f"secret_env.{name} is {MASK}, but no value is stored to keep; send it")
            value = stored[name]
        values[name] = value
    return values
