"""Typed HTTP client for the apiserver, in a blocking and an asyncio flavour.

Each API operation is described once, as a `Call` (method, path, query, body,
response type); `Client` and `AsyncClient` only differ in how they send it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from nodeapi import models as m
from nodeapi.errors import (
    CertificateError,
    InvalidResponse,
    RequestTimeout,
    TLSError,
    TransportError,
    error_for_status,
)
from nodeapi.tls import Verify, client_context, ssl_reason, trusted
from nodeapi.version import VERSION_HEADER, VersionGate

T = TypeVar("T")

DEFAULT_SERVER = "http://localhost:8080"
API = "/api/v1"
X509_V_ERR_HOSTNAME_MISMATCH = 62  # a certificate for another name: another CA file would not help


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    response: type[T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None


class _NoContent:
    """Marker response type for 204 answers."""


def _seg(value: str) -> str:
    return quote(value, safe="")


def _selector_param(selector: dict[str, str] | list[str] | str | None) -> str | None:
    if selector is None:
        return None
    if isinstance(selector, str):
        return selector or None
    if isinstance(selector, dict):
        return ",".join(f"{k}={v}" for k, v in selector.items()) or None
    return ",".join(selector) or None


class Calls:
    """Builders for every API operation. Returned `Call`s are sent by a client."""

    # nodes -----------------------------------------------------------------
    @staticmethod
    def heartbeat(req: m.HeartbeatRequest) -> Call[m.HeartbeatResponse]:
        return Call("POST", f"{API}/nodes/heartbeat", m.HeartbeatResponse, body=req)

    @staticmethod
    def list_nodes(
        status: str | None = None,
        selector: dict[str, str] | list[str] | str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Call[m.NodeList]:
        params: dict[str, Any] = {"status": status, "selector": _selector_param(selector), "offset": offset}
        if limit is not None:
            params["limit"] = limit
        return Call("GET", f"{API}/nodes", m.NodeList, params=params)

    @staticmethod
    def get_node(node_id: str) -> Call[m.Node]:
        return Call("GET", f"{API}/nodes/{_seg(node_id)}", m.Node)

    @staticmethod
    def patch_node(node_id: str, patch: m.NodePatch) -> Call[m.Node]:
        return Call("PATCH", f"{API}/nodes/{_seg(node_id)}", m.Node, body=patch)

    @staticmethod
    def delete_node(node_id: str) -> Call[_NoContent]:
        return Call("DELETE", f"{API}/nodes/{_seg(node_id)}", _NoContent)

    @staticmethod
    def node_runs(node_id: str, status: str | None = None, limit: int | None = None) -> Call[m.RunList]:
        params: dict[str, Any] = {"status": status}
        if limit is not None:
            params["limit"] = limit
        return Call("GET", f"{API}/nodes/{_seg(node_id)}/runs", m.RunList, params=params)

    @staticmethod
    def get_env_config(node_id: str, reveal: bool = False) -> Call[m.EnvConfig]:
        params = {"reveal": "true"} if reveal else {}
        return Call("GET", f"{API}/nodes/{_seg(node_id)}/env-config", m.EnvConfig, params=params)

    @staticmethod
    def reset_credential(node_id: str) -> Call[_NoContent]:
        return Call("DELETE", f"{API}/nodes/{_seg(node_id)}/credential", _NoContent)

    @staticmethod
    def put_env_config(node_id: str, config: m.EnvConfig) -> Call[m.EnvConfig]:
        return Call("PUT", f"{API}/nodes/{_seg(node_id)}/env-config", m.EnvConfig, body=config)

    @staticmethod
    def test_proxy(
        node_id: str, req: m.ProxyTestRequest | None = None, wait: float | None = None
    ) -> Call[m.ProxyTestResult]:
        params: dict[str, Any] = {}
        if wait is not None:
            params["wait"] = wait
        return Call(
            "POST",
            f"{API}/nodes/{_seg(node_id)}/env-config/test-proxy",
            m.ProxyTestResult,
            params=params,
            body=req,
            timeout=(wait or 30.0) + 10.0,
        )

    # node work channel (nodemanager) ---------------------------------------
    @staticmethod
    def poll_work(node_id: str, wait: float = 20.0) -> Call[m.WorkResponse]:
        return Call(
            "GET",
            f"{API}/nodes/{_seg(node_id)}/work",
            m.WorkResponse,
            params={"wait": wait},
            timeout=wait + 10.0,
        )

    @staticmethod
    def post_run_events(run_id: str, batch: m.NodeEventBatch) -> Call[m.NodeEventAck]:
        return Call("POST", f"{API}/runs/{_seg(run_id)}/node-events", m.NodeEventAck, body=batch)

    @staticmethod
    def post_node_events(node_id: str, batch: m.NodeEventsBatch) -> Call[m.NodeEventsResults]:
        return Call("POST", f"{API}/nodes/{_seg(node_id)}/events", m.NodeEventsResults, body=batch)

    @staticmethod
    def post_command_result(node_id: str, command_id: str, result: m.CommandResult) -> Call[_NoContent]:
        return Call(
            "POST",
            f"{API}/nodes/{_seg(node_id)}/commands/{_seg(command_id)}/result",
            _NoContent,
            body=result,
        )

    # runs ------------------------------------------------------------------
    @staticmethod
    def create_run(req: m.RunCreate, idempotency_key: str | None = None) -> Call[m.Run]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call("POST", f"{API}/runs", m.Run, body=req, headers=headers)

    @staticmethod
    def list_runs(
        status: str | None = None, node_id: str | None = None, limit: int | None = None, offset: int = 0
    ) -> Call[m.RunList]:
        params: dict[str, Any] = {"status": status, "node_id": node_id, "offset": offset}
        if limit is not None:
            params["limit"] = limit
        return Call("GET", f"{API}/runs", m.RunList, params=params)

    @staticmethod
    def get_run(run_id: str) -> Call[m.Run]:
        return Call("GET", f"{API}/runs/{_seg(run_id)}", m.Run)

    @staticmethod
    def cancel_run(run_id: str) -> Call[m.Run]:
        return Call("POST", f"{API}/runs/{_seg(run_id)}/cancel", m.Run)

    @staticmethod
    def run_events(
        run_id: str, after: int = 0, type: str | None = None, wait: float | None = None
    ) -> Call[m.RunEventList]:
        params: dict[str, Any] = {"after": after, "type": type}
        if wait is not None:
            params["wait"] = wait
        return Call(
            "GET",
            f"{API}/runs/{_seg(run_id)}/events",
            m.RunEventList,
            params=params,
            timeout=(wait + 10.0) if wait else None,
        )

    # misc ------------------------------------------------------------------
    @staticmethod
    def version() -> Call[m.VersionInfo]:
        return Call("GET", "/version", m.VersionInfo)

    @staticmethod
    def audit(limit: int | None = None, offset: int = 0, target_id: str | None = None) -> Call[m.AuditList]:
        params: dict[str, Any] = {"offset": offset, "target_id": target_id}
        if limit is not None:
            params["limit"] = limit
        return Call("GET", f"{API}/audit", m.AuditList, params=params)


def _clean_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "agent-nodes-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _decode(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        detail = response.reason_phrase or "error"
        extra: Any = None
        try:
            body = msgspec.json.decode(response.content)
            if isinstance(body, dict):
                detail = str(body.get("detail") or detail)
                extra = body.get("extra")
        except msgspec.DecodeError:
            if response.text:
                detail = response.text[:500]
        raise error_for_status(response.status_code, detail, extra, _retry_after(response))
    if call.response is _NoContent:
        return _NoContent()  # type: ignore[return-value]
    try:
        return msgspec.json.decode(response.content, type=call.response)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidResponse(str(response.request.url), str(exc)) from exc


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is ignored), capped at an hour."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 3600.0) if seconds == seconds else None


def _request(call: Call[Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": _clean_params(call.params)}
    if call.body is not None:
        kwargs["content"] = msgspec.json.encode(call.body)
        kwargs["headers"] = {"Content-Type": "application/json", **call.headers}
    elif call.headers:
        kwargs["headers"] = dict(call.headers)
    if call.timeout is not None:
        kwargs["timeout"] = call.timeout
    return kwargs


def _transport_error(
    base_url: str, exc: httpx.TransportError, verify: Verify, ca_hint: str | None
) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(base_url, "timed out")
    tls = _ssl_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        reason = f"{ssl_reason(tls)} (trusting {trusted(verify)})"
        if ca_hint and tls.verify_code != X509_V_ERR_HOSTNAME_MISMATCH:
            reason = f"{reason}; {ca_hint}"
        return CertificateError(base_url, reason)
    if tls is not None:
        reason = f"TLS handshake failed: {ssl_reason(tls)}"
        if tls.reason == "WRONG_VERSION_NUMBER":  # what a plain-HTTP answer to a TLS hello looks like
            reason = f"{reason} (does the server serve plain http://?)"
        return TLSError(base_url, reason)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        reason = "connection refused"
    return TransportError(base_url, reason)


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The SSL error behind an httpx error (httpx and httpcore chain it as the cause)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _http_options(base_url: str, token: str | None, timeout: float, verify: Verify) -> dict[str, Any]:
    """httpx's options for both clients. The environment's proxy variables are ignored: the
    apiserver is reached directly."""
    return {
        "base_url": base_url,
        "headers": _headers(token),
        "timeout": timeout,
        "trust_env": False,
        "verify": client_context(verify),
    }


def _authorize(headers: httpx.Headers, token: str | None) -> None:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers.pop("Authorization", None)


class Client:
    """Blocking client (nodectl).

    `verify`: the CA file (PEM) an https:// server's certificate must chain to, or True for
    the system CA store (nodeapi.tls); CAFileError when the file cannot be used. `ca_hint`
    ends the message of a certificate error: how the user names a CA file. `version_gate`
    checks the version every answer states (nodeapi.version).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        verify: Verify = True,
        ca_hint: str | None = None,
        version_gate: VersionGate | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._verify, self._ca_hint = verify, ca_hint
        self.version_gate = version_gate
        self._http = httpx.Client(**_http_options(self.base_url, token, timeout, verify))

    def set_token(self, token: str | None) -> None:
        """Send this bearer token from now on."""
        _authorize(self._http.headers, token)

    def send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **_request(call))
        except httpx.TransportError as exc:
            raise _transport_error(self.base_url, exc, self._verify, self._ca_hint) from exc
        if self.version_gate is not None:
            self.version_gate.check(response.headers.get(VERSION_HEADER))
        return _decode(call, response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client (nodemanager); `verify`, `ca_hint` and `version_gate` as for `Client`."""

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        verify: Verify = True,
        ca_hint: str | None = None,
        version_gate: VersionGate | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._verify, self._ca_hint = verify, ca_hint
        self.version_gate = version_gate
        self._http = httpx.AsyncClient(**_http_options(self.base_url, token, timeout, verify))

    def set_token(self, token: str | None) -> None:
        """Send this bearer token from now on (a node switches to its own credential)."""
        _authorize(self._http.headers, token)

    async def send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **_request(call))
        except httpx.TransportError as exc:
            raise _transport_error(self.base_url, exc, self._verify, self._ca_hint) from exc
        if self.version_gate is not None:
            self.version_gate.check(response.headers.get(VERSION_HEADER))
        return _decode(call, response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
