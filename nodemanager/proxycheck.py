"""The on-node proxy test: can runs on this node reach the outside through the configured proxy?

Steps on raw asyncio sockets, each timed, stopping at the first failure (the steps that did
not run are reported skipped):

1. `connect`: resolve the proxy's host and open a TCP connection (TLS too for an https:// proxy);
2. per target, in order: `http`, a plain HTTP GET of an http:// target through the HTTP proxy, or
   `https`, CONNECT to an https:// target through the HTTPS proxy, a TLS handshake through the
   tunnel, and a GET.

The targets are those the request names (any number, either scheme), or the two defaults.

The outcome is one reason of `ProxyTestReason`. Proxy passwords never appear in a result, a
message or a log line: URLs are shown as `scheme://user:***@host:port`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from nodeapi.masking import mask_url_password
from nodeapi.models import ProxyConfig, ProxyTestReason, ProxyTestResult, ProxyTestStep

log = logging.getLogger(__name__)

DEFAULT_HTTP_TARGET = "http://example.com/"
DEFAULT_HTTPS_TARGET = "https://example.com/"
DEFAULT_TIMEOUT = 10.0
SKIPPED_AFTER_FAILURE = "not run: an earlier step failed"
USER_AGENT = "agentnodes-proxycheck/1"
MAX_HEAD_BYTES = 64 * 1024
_KNOWN_PROXY_SERVERS = ("tinyproxy", "squid", "proxy.py", "privoxy", "envoy", "nginx")


class ProxyCheckError(Exception):
    """One failed step: its reason and a human message (never with a password in it)."""

    def __init__(self, reason: ProxyTestReason, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.reason: ProxyTestReason = reason
        self.message = message
        self.status_code = status_code


def mask_proxy_url(url: str | None) -> str | None:
    """The URL with any password replaced by `***`; no URL stays None."""
    return mask_url_password(url) if url else url


@dataclass(frozen=True)
class ProxyEndpoint:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    display: str  # masked

    @classmethod
    def parse(cls, url: str) -> ProxyEndpoint:
        display = mask_url_password(url)
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = parts.scheme.lower()
        if scheme.startswith("socks"):
            raise ProxyCheckError(
                "error", f"{scheme} proxies are not supported by the proxy test ({display})"
            )
        if scheme not in ("http", "https"):
            raise ProxyCheckError("error", f"unsupported proxy scheme {scheme!r} in {display}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise ProxyCheckError("error", f"invalid proxy port in {display}") from exc
        if not parts.hostname:
            raise ProxyCheckError("error", f"no host in proxy URL {display}")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(scheme, parts.hostname, port, username, password, display)

    def authorization_header(self) -> str:
        if self.username is None:
            return ""
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode("ascii")
        return f"Proxy-Authorization: Basic {token}\r\n"


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str, scheme: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme.lower() != scheme or not parts.hostname:
            raise ProxyCheckError("error", f"the {scheme} target must be a {scheme}:// URL, not {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(url, parts.hostname, port, path)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names

    @property
    def from_proxy(self) -> bool:
        """Whether the proxy wrote this answer itself (rather than relaying the target's)."""
        if "proxy-agent" in self.headers or "x-squid-error" in self.headers:
            return True
        server = self.headers.get("server", "").lower()
        return "via" not in self.headers and any(name in server for name in _KNOWN_PROXY_SERVERS)

    def describe(self) -> str:
        return f"{self.status} {self.reason}".strip()


# ------------------------------------------------------------------ the steps


def _timeout_message(what: str, seconds: float) -> str:
    return f"timed out after {seconds:g}s {what}"


async def _resolve(host: str, port: int, seconds: float) -> list[tuple[int, str]]:
    if host.lower().rstrip(".").endswith(".invalid") or host.lower() == "invalid":
        # RFC 6761: never resolves; answered here without sending a query
        raise ProxyCheckError(
            "dns", f"cannot resolve proxy host {host!r} (the .invalid domain never resolves)"
        )
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        return [(socket.AF_INET6 if address.version == 6 else socket.AF_INET, host)]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise ProxyCheckError("dns", _timeout_message(f"resolving proxy host {host!r}", seconds)) from exc
    except socket.gaierror as exc:
        raise ProxyCheckError("dns", f"cannot resolve proxy host {host!r}: {exc.strerror}") from exc
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]


async def _open(
    proxy: ProxyEndpoint, seconds: float, ssl_context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    addresses = await _resolve(proxy.host, proxy.port, seconds)
    last_error: OSError | None = None
    for _family, address in addresses:
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.open_connection(
                    address,
                    proxy.port,
                    ssl=ssl_context if proxy.scheme == "https" else None,
                    server_hostname=proxy.host if proxy.scheme == "https" else None,
                    limit=MAX_HEAD_BYTES,
                )
        except TimeoutError as exc:
            where = f"{proxy.host}:{proxy.port}"
            raise ProxyCheckError(
                "timeout", _timeout_message(f"connecting to proxy {where}", seconds)
            ) from exc
        except ssl.SSLError as exc:
            raise ProxyCheckError(
                "tls_error", f"TLS with proxy {proxy.display} failed: {_ssl_reason(exc)}"
            ) from exc
        except ConnectionRefusedError as exc:
            last_error = exc
        except OSError as exc:
            last_error = exc
    if isinstance(last_error, ConnectionRefusedError):
        raise ProxyCheckError("refused", f"proxy {proxy.host}:{proxy.port} refused the connection")
    raise ProxyCheckError("error", f"cannot connect to proxy {proxy.host}:{proxy.port}: {last_error}")


async def _read_head(reader: asyncio.StreamReader, seconds: float, waiting_for: str) -> ResponseHead:
    try:
        async with asyncio.timeout(seconds):
            raw = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError as exc:
        raise ProxyCheckError("timeout", _timeout_message(f"waiting for {waiting_for}", seconds)) from exc
    except asyncio.IncompleteReadError as exc:
        raise ProxyCheckError(
            "error", f"connection closed without an answer while waiting for {waiting_for}"
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise ProxyCheckError("error", f"oversized response head from {waiting_for}") from exc
    except ConnectionError as exc:
        raise ProxyCheckError("error", f"connection reset while waiting for {waiting_for}") from exc
    except ssl.SSLError as exc:
        raise ProxyCheckError(
            "tls_error", f"TLS error while waiting for {waiting_for}: {_ssl_reason(exc)}"
        ) from exc
    lines = raw.decode("iso-8859-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ProxyCheckError("error", f"not an HTTP answer from {waiting_for}: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(code), reason, headers)


def _auth_failure(proxy: ProxyEndpoint, head: ResponseHead) -> ProxyCheckError:
    if proxy.username is None:
        message = (
            f"proxy {proxy.display} requires authentication ({head.describe()}): put user:password in its URL"
        )
    else:
        message = (
            f"proxy {proxy.display} rejected the credentials of user {proxy.username!r} ({head.describe()})"
        )
    return ProxyCheckError("auth_required", message, head.status)


def classify_response(proxy: ProxyEndpoint, target: Target, head: ResponseHead) -> None:
    """Raise unless a response to a request for `target` (relayed or not) means success."""
    if head.status == 407 or (head.status == 401 and head.from_proxy):
        raise _auth_failure(proxy, head)
    if head.status >= 500 and (head.from_proxy or head.status in (502, 503, 504)):
        raise ProxyCheckError(
            "upstream_error", f"proxy could not reach {target.url} ({head.describe()})", head.status
        )
    if head.status >= 400 and head.from_proxy:
        raise ProxyCheckError(
            "error", f"proxy refused the request for {target.url} ({head.describe()})", head.status
        )
    if head.status >= 400:
        raise ProxyCheckError("bad_status", f"{target.url} answered {head.describe()}", head.status)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def _http_fetch(
    proxy: ProxyEndpoint, target: Target, seconds: float, tls: ssl.SSLContext
) -> ResponseHead:
    reader, writer = await _open(proxy, seconds, tls)
    try:
        return await _http_get(reader, writer, proxy, target, seconds)
    finally:
        await _close(writer)


async def _http_get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: ProxyEndpoint,
    target: Target,
    seconds: float,
) -> ResponseHead:
    request = (
        f"GET {target.url} HTTP/1.1\r\nHost: {target.authority}\r\n{proxy.authorization_header()}"
        f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode("ascii"))
    head = await _read_head(reader, seconds, f"the proxy to answer GET {target.url}")
    classify_response(proxy, target, head)
    return head


async def _https_get(
    proxy: ProxyEndpoint, target: Target, seconds: float, tls: ssl.SSLContext
) -> ResponseHead:
    reader, writer = await _open(proxy, seconds, tls)
    try:
        connect = (
            f"CONNECT {target.authority} HTTP/1.1\r\nHost: {target.authority}\r\n"
            f"{proxy.authorization_header()}User-Agent: {USER_AGENT}\r\n\r\n"
        )
        writer.write(connect.encode("ascii"))
        head = await _read_head(reader, seconds, f"the proxy to answer CONNECT {target.authority}")
        if head.status in (401, 407):
            raise _auth_failure(proxy, head)
        if head.status >= 500:
            raise ProxyCheckError(
                "upstream_error", f"proxy could not reach {target.authority} ({head.describe()})", head.status
            )
        if not 200 <= head.status < 300:
            raise ProxyCheckError(
                "error", f"proxy refused CONNECT {target.authority} ({head.describe()})", head.status
            )
        try:
            async with asyncio.timeout(seconds):
                await writer.start_tls(tls, server_hostname=target.host)
        except TimeoutError as exc:
            raise ProxyCheckError(
                "timeout", _timeout_message(f"in the TLS handshake with {target.host}", seconds)
            ) from exc
        except ssl.SSLError as exc:
            raise ProxyCheckError("tls_error", f"TLS with {target.host} failed: {_ssl_reason(exc)}") from exc
        except ConnectionError as exc:
            raise ProxyCheckError(
                "tls_error", f"connection closed in the TLS handshake with {target.host}"
            ) from exc
        request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.authority}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        head = await _read_head(reader, seconds, f"{target.url} to answer")
        if head.status >= 400:
            raise ProxyCheckError("bad_status", f"{target.url} answered {head.describe()}", head.status)
        return head
    finally:
        await _close(writer)


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason or str(exc)


def tls_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """The system's trusted CAs, plus those in `ca_file` (the node's PROXY_TEST_CA_FILE)."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ProxyCheckError("error", f"cannot load the CA file {ca_file}: {exc}") from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# ------------------------------------------------------------------ the test


class _Steps:
    def __init__(self) -> None:
        self.steps: list[ProxyTestStep] = []

    @contextlib.asynccontextmanager
    async def step(self, name: str, target: str | None = None) -> AsyncIterator[_StepRecord]:
        started = time.perf_counter()
        record = _StepRecord()
        try:
            yield record
        except ProxyCheckError as exc:
            self.steps.append(
                ProxyTestStep(
                    name=name,
                    ok=False,
                    latency_ms=_ms(started),
                    detail=exc.message,
                    status_code=exc.status_code,
                    target=target,
                )
            )
            raise
        self.steps.append(
            ProxyTestStep(
                name=name,
                ok=True,
                latency_ms=_ms(started),
                detail=record.detail,
                status_code=record.status,
                target=target,
            )
        )

    def skip_rest(self, planned: list[str]) -> None:
        """Report the planned steps (`connect`, then target URLs) that did not run as skipped."""
        for item in planned[len(self.steps) :]:
            name, target = ("connect", None) if item == "connect" else (_scheme(item), item)
            self.steps.append(
                ProxyTestStep(name=name, ok=False, skipped=True, detail=SKIPPED_AFTER_FAILURE, target=target)
            )


@dataclass
class _StepRecord:
    detail: str | None = None
    status: int | None = None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def targets_of(request_urls: list[str], http_url: str | None, https_url: str | None) -> list[str]:
    """The URLs a request names, in order and each once; the two defaults when it names none."""
    named = list(dict.fromkeys([*request_urls, *(url for url in (http_url, https_url) if url)]))
    return named or [DEFAULT_HTTP_TARGET, DEFAULT_HTTPS_TARGET]


def _scheme(url: str) -> str:
    return "https" if url.lower().startswith("https://") else "http"


def new_result(proxy_url: str | None, targets: list[str], node_id: str | None) -> ProxyTestResult:
    return ProxyTestResult(
        ok=False,
        reason="error",
        message="",
        proxy=mask_proxy_url(proxy_url),
        target_http=next((t for t in targets if _scheme(t) == "http"), None),
        target_https=next((t for t in targets if _scheme(t) == "https"), None),
        targets=list(targets),
        node_id=node_id,
        tested_at=datetime.now(UTC),
    )


async def check_proxy(
    proxy_url: str,
    targets: list[str],
    *,
    https_proxy_url: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - a limit per step, as in ProxyTestRequest
    verify: bool = True,
    ca_file: str | None = None,
    node_id: str | None = None,
) -> ProxyTestResult:
    """Fetch each target through the proxy its scheme selects: `proxy_url` for http://,
    `https_proxy_url` (default: the same proxy) for https://. The first step connects to the
    proxy of the first target; a step after a failed one is reported skipped."""
    step_timeout = timeout or DEFAULT_TIMEOUT
    result = new_result(proxy_url, targets, node_id)
    runner = _Steps()
    try:
        proxy = ProxyEndpoint.parse(proxy_url)
        https_proxy = ProxyEndpoint.parse(https_proxy_url) if https_proxy_url else proxy
        parsed = [Target.parse(url, _scheme(url)) for url in targets]
        tls = tls_context(verify, ca_file)
        first = https_proxy if targets and _scheme(targets[0]) == "https" else proxy
        async with runner.step("connect") as record:
            _, writer = await _open(first, step_timeout, tls)
            record.detail = f"connected to {first.host}:{first.port}"
        await _close(writer)
        for target in parsed:
            scheme = _scheme(target.url)
            async with runner.step(scheme, target.url) as record:
                if scheme == "http":
                    head = await _http_fetch(proxy, target, step_timeout, tls)
                else:
                    head = await _https_get(https_proxy, target, step_timeout, tls)
                record.status, record.detail = head.status, f"{target.url} answered {head.describe()}"
    except ProxyCheckError as exc:
        result.reason, result.message = exc.reason, exc.message
        runner.skip_rest(["connect", *targets])
    else:
        result.ok, result.reason = True, "ok"
        latencies = ", ".join(f"{step.name} {step.latency_ms:g} ms" for step in runner.steps)
        result.message = f"proxy {result.proxy} works for {_described(targets)} ({latencies})"
    result.steps = runner.steps
    log.info("proxy test of %s: %s (%s)", result.proxy, result.reason, result.message)
    return result


def _described(targets: list[str]) -> str:
    schemes = sorted({_scheme(url).upper() for url in targets})
    return f"{len(targets)} target(s) over {' and '.join(schemes)}"


async def check_proxy_config(
    config: ProxyConfig,
    targets: list[str],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - a limit per step, as in ProxyTestRequest
    verify: bool = True,
    ca_file: str | None = None,
    node_id: str | None = None,
) -> ProxyTestResult:
    """The test for a node's env config: http_proxy for http:// targets, https_proxy for https://.

    With only one of the two set, every target goes through it. `no_proxy` is not consulted: the
    targets are meant to be reached through the proxy.
    """
    proxy_url = config.http_proxy or config.https_proxy
    if not proxy_url:
        result = new_result(None, targets, node_id)
        result.message = "no proxy configured (set http_proxy or https_proxy)"
        return result
    return await check_proxy(
        proxy_url,
        targets,
        https_proxy_url=config.https_proxy if config.https_proxy != proxy_url else None,
        timeout=timeout,
        verify=verify,
        ca_file=ca_file,
        node_id=node_id,
    )
