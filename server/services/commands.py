"""Commands to nodes, answered asynchronously; today one kind: the proxy test.

POST /nodes/{id}/env-config/test-proxy stores a `node_commands` row and wakes the node's
work long-poll; the node runs the check and posts the result; the waiting request polls
the row (so the result may arrive through any apiserver replica) and answers it, or 504
at its deadline (the command is then marked expired). Every result is also kept on the
node (`last_proxy_test`), so `nodes get` and the console show the latest one.

The payload carries the proxy URL with its password (the node needs it); once the command is
answered or expired the stored payload is masked, and any proxy password a node's result
repeats is replaced by `***` before the result is stored or answered.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi import validation
from nodeapi.masking import mask_url_password
from server.db.models import NodeCommandRow
from server.errors import Conflict, GatewayTimeout, InvalidInput, NotFound
from server.repositories import commands as repo
from server.repositories import env_config as env_repo
from server.repositories import nodes as node_repo
from server.secrets import SecretBox
from server.services.context import ServiceContext
from server.services.env_config import env_config_view, proxy_urls
from server.services.longpoll import long_poll
from server.services.mappers import utc

DEFAULT_WAIT = 15.0
MAX_WAIT = 60.0
RESULT_RECHECK = 2.0  # an answer posted to another replica wakes us through the wake bus; this is the net
MAX_STEP_TIMEOUT = 60.0
TEST_PROXY = "test_proxy"


@dataclass(frozen=True)
class ProxyTestTargets:
    """Where a proxy test connects when the request names no target (PROXY_TEST_URL, PROXY_TEST_HTTPS_URL)."""

    http_url: str
    https_url: str


class CommandService:
    def __init__(self, ctx: ServiceContext, targets: ProxyTestTargets) -> None:
        self._ctx = ctx
        self._targets = targets

    async def test_proxy(
        self, node_id: str, req: m.ProxyTestRequest | None, wait: float
    ) -> m.ProxyTestResult:
        if not 0 < wait <= MAX_WAIT:
            raise InvalidInput(f"wait must be more than 0 and at most {MAX_WAIT:g} seconds, got {wait:g}")
        req = req or m.ProxyTestRequest()
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker.begin() as session:
            node = await node_repo.get_node(session, node_id)
            if node is None:
                raise NotFound(f"node {node_id!r} not found")
            self._require_online(node_id, node.last_heartbeat_at, node.draining, now)
            if not self._ctx.settings.protected_mode and not await node_repo.has_credential(session, node_id):
                # its credential was reset: it polls no work until it registers again
                raise Conflict(
                    f"node {node_id} has no credential (reset by an admin) and takes no commands until it "
                    "registers again with the join token"
                )
            saved = env_config_view(
                await env_repo.get(session, node_id), self._ctx.secrets, reveal=True
            ).proxy
            payload = self._payload(req, saved)
            command = NodeCommandRow(
                id=f"cmd-{secrets.token_hex(8)}",
                node_id=node_id,
                type=TEST_PROXY,
                payload=payload,
                created_at=now,
            )
            await repo.add(session, command)
        self._ctx.node_work.notify(node_id)
        return await self._await_result(node_id, command.id, wait)

    def _require_online(
        self, node_id: str, last_heartbeat: datetime | None, draining: bool, now: datetime
    ) -> None:
        if self._ctx.status_rule.of(last_heartbeat, draining, now) != "offline":
            return
        heard = utc(last_heartbeat)
        if heard is None:
            raise Conflict(f"node {node_id} is offline: it never sent a heartbeat")
        raise Conflict(f"node {node_id} is offline: last heartbeat {(now - heard).total_seconds():.0f} s ago")

    def _payload(self, req: m.ProxyTestRequest, saved: m.ProxyConfig) -> dict[str, Any]:
        """What the node runs: the named targets only, or the server's defaults when none is named."""
        proxy = saved
        if req.proxy is not None:  # `***` in a password stands for the saved one, as in a PUT
            proxy = m.ProxyConfig(**proxy_urls(req.proxy, saved), no_proxy=req.proxy.no_proxy)
        try:
            validation.validate_proxy_settings(proxy.http_proxy, proxy.https_proxy, proxy.no_proxy)
            named = list(dict.fromkeys([*req.urls, *(url for url in (req.url, req.https_url) if url)]))
            urls = validation.validate_target_urls(named) or [self._targets.http_url, self._targets.https_url]
            if req.url and not req.url.startswith("http://"):
                raise ValueError(f"url must be an http:// URL, got {req.url[:80]!r}")
            if req.https_url and not req.https_url.startswith("https://"):
                raise ValueError(f"https_url must be an https:// URL, got {req.https_url[:80]!r}")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if req.timeout is not None and not 0 < req.timeout <= MAX_STEP_TIMEOUT:
            raise InvalidInput(f"timeout must be more than 0 and at most {MAX_STEP_TIMEOUT:g} seconds")
        if req.image is not None and (not req.image.strip() or len(req.image) > 512):
            raise InvalidInput("image must be a non-empty image reference of at most 512 characters")
        return {
            # the node gets the full URLs over its own channel (unsealed_payload); the row keeps them sealed
            "proxy": {
                "http_proxy": mask_url_password(proxy.http_proxy) if proxy.http_proxy else None,
                "https_proxy": mask_url_password(proxy.https_proxy) if proxy.https_proxy else None,
                "no_proxy": proxy.no_proxy,
            },
            "sealed_proxy": self._ctx.secrets.seal(msgspec.to_builtins(proxy)),
            "urls": urls,
            # the first target of each scheme, for nodes that read only these two
            "url": next((url for url in urls if url.startswith("http://")), None),
            "https_url": next((url for url in urls if url.startswith("https://")), None),
            "timeout": req.timeout,
            "in_container": req.in_container,
            "image": req.image,
        }

    async def _await_result(self, node_id: str, command_id: str, wait: float) -> m.ProxyTestResult:
        async def check() -> NodeCommandRow | None:
            async with self._ctx.sessionmaker() as session:
                return await repo.get(session, command_id)

        row = await long_poll(
            self._ctx.command_results,
            command_id,
            check,
            lambda found: found is not None and found.state == "done",
            wait=wait,
            recheck=lambda _: RESULT_RECHECK,
        )
        if row is not None and row.state == "done":
            return _result_of(node_id, row)
        async with self._ctx.sessionmaker.begin() as session:
            expired = await repo.expire(session, command_id, self._ctx.clock.now())
            row = None if expired else await repo.get(session, command_id)
            if expired:
                await _forget_secrets(session, command_id)
        if row is not None and row.state == "done":
            return _result_of(node_id, row)
        raise GatewayTimeout(f"node {node_id} did not answer the proxy test within {wait:g} s")

    async def store_result(self, node_id: str, command_id: str, result: m.CommandResult) -> None:
        """The node's answer; posting it again changes nothing."""
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker.begin() as session:
            row = await repo.get(session, command_id)
            if row is None or row.node_id != node_id:
                raise NotFound(f"command {command_id!r} of node {node_id!r} not found")
            full = unsealed_payload(row.payload or {}, self._ctx.secrets)
            stored = _normalise(node_id, result, now, _proxy_passwords(full))
            if not await repo.complete(session, command_id, stored, now):
                return
            await _forget_secrets(session, command_id)
            if row.type == TEST_PROXY:
                await node_repo.set_last_proxy_test(session, node_id, stored["result"])
        self._ctx.command_results.notify(command_id)


def _proxy_passwords(payload: dict[str, Any]) -> set[str]:
    proxy = payload.get("proxy") or {}
    passwords: set[str] = set()
    for name in ("http_proxy", "https_proxy"):
        url = proxy.get(name)
        try:
            password = urlsplit(url).password if isinstance(url, str) else None
        except ValueError:
            password = None
        if password:
            passwords |= {password, unquote(password)}
    return passwords


MIN_SCRUBBED_LENGTH = 4  # a shorter password is masked only where it sits in a URL (`:pw@`)


def _without(text: str | None, passwords: set[str]) -> str | None:
    """`text` without the passwords: in URL userinfo always, elsewhere when long enough that
    replacing it cannot garble ordinary words (a password "p" would eat every p)."""
    if text is None:
        return None
    for password in sorted(passwords, key=len, reverse=True):
        text = text.replace(f":{password}@", ":***@")
        if len(password) >= MIN_SCRUBBED_LENGTH:
            text = text.replace(password, "***")
    return text


def _scrub(result: m.ProxyTestResult, passwords: set[str]) -> None:
    """Defence in depth: a node's free-text answers must not repeat a proxy password."""
    if not passwords:
        return
    result.message = _without(result.message, passwords) or ""
    result.proxy = _without(result.proxy, passwords)
    for step in result.steps:
        step.detail = _without(step.detail, passwords)


async def _forget_secrets(session: AsyncSession, command_id: str) -> None:
    """Drop the sealed proxy of a command nobody will read again (the masked one stays)."""
    row = await repo.get(session, command_id)
    if row is not None and "sealed_proxy" in (row.payload or {}):
        payload = {key: value for key, value in row.payload.items() if key != "sealed_proxy"}
        await repo.set_payload(session, command_id, payload)


def unsealed_payload(payload: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """A command's payload as its node gets it: the proxy URLs with their passwords."""
    if "sealed_proxy" not in payload:
        return dict(payload)
    unsealed = {key: value for key, value in payload.items() if key != "sealed_proxy"}
    proxy = box.open(payload.get("sealed_proxy"))
    unsealed["proxy"] = {**(payload.get("proxy") or {}), **proxy}
    return unsealed


def _normalise(node_id: str, result: m.CommandResult, now: datetime, passwords: set[str]) -> dict[str, Any]:
    """Keep the command result; for a proxy test, as a complete ProxyTestResult."""
    try:
        proxy_result = msgspec.convert(result.result, m.ProxyTestResult) if result.result else None
    except msgspec.ValidationError:
        proxy_result = None
    if proxy_result is None:
        message = result.error or "the node answered without a proxy test result"
        proxy_result = m.ProxyTestResult(ok=False, reason="error", message=message)
    proxy_result.node_id = node_id
    proxy_result.tested_at = proxy_result.tested_at or now
    _scrub(proxy_result, passwords)
    body: dict[str, Any] = msgspec.to_builtins(proxy_result)
    return {"ok": result.ok, "error": _without(result.error, passwords), "result": body}


def _result_of(node_id: str, row: NodeCommandRow) -> m.ProxyTestResult:
    stored = (row.result or {}).get("result")
    if not stored:
        return m.ProxyTestResult(ok=False, reason="error", message="the node sent no result", node_id=node_id)
    return msgspec.convert(stored, m.ProxyTestResult)
