"""The proxy test from inside a container: the exact network path of an agent on this node.

A throwaway container of a busybox image (PROXY_PROBE_IMAGE, or the request's image) on the
runs' network gets the proxy variables as runs get them (both cases: busybox `wget` reads only
`http_proxy`) and fetches each http:// target with `wget -S`, stopping at the first failure; its
output is classified into the same reasons as the on-node test (`nodemanager.proxycheck`).

Limits, reported rather than hidden: busybox `wget` cannot tunnel HTTPS through a proxy
(no CONNECT), so `https` steps are answered `skipped`; the on-node test covers CONNECT + TLS.
`wget -T` crashes busybox 1.35, so the `timeout` applet bounds the fetch instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import uuid
from urllib.parse import quote, urlsplit

import docker.errors

from nodeapi.models import ProxyConfig, ProxyTestResult, ProxyTestStep
from nodemanager.proxycheck import (
    DEFAULT_TIMEOUT,
    SKIPPED_AFTER_FAILURE,
    ProxyCheckError,
    ProxyEndpoint,
    ResponseHead,
    Target,
    classify_response,
    new_result,
)
from nodemanager.runtime.base import DEFAULT_PIDS_LIMIT, ImageNotFound, RuntimeError_
from nodemanager.runtime.docker import LABEL_NODE_ID, DockerRuntime
from nodemanager.runtime.sandbox import hardening

PROBE_LABEL = "agentnodes.proxycheck"
CONTAINER_GRACE_SECONDS = 15.0  # container start and teardown, on top of the step timeout
HTTPS_NOT_TESTED = "busybox wget cannot tunnel HTTPS through a proxy"
HTTPS_SKIPPED = (
    "not tested inside the container: busybox wget cannot tunnel HTTPS through a proxy "
    "(run the test on the node for the CONNECT + TLS step)"
)

# Times come from /proc/uptime (busybox `date` has no sub-second format); `set -f`: a URL may hold
# glob characters, and URLs never hold white space (the server refuses them).
PROBE_SCRIPT = r"""
set -f
for url in $PROBE_URLS; do
  read t0 _ </proc/uptime
  timeout "$PROBE_TIMEOUT" wget -S -O /dev/null "$url" 2>&1
  rc=$?
  read t1 _ </proc/uptime
  echo "@@step http $rc $t0 $t1"
  [ "$rc" = 0 ] || break
done
"""

_STEP_LINE = re.compile(r"^@@step (\S+) (\d+) ([\d.]+) ([\d.]+)$")
_STATUS_LINE = re.compile(r"^\s+HTTP/\d(?:\.\d)? (\d{3}) ?(.*)$")
_HEADER_LINE = re.compile(r"^\s+([A-Za-z0-9-]+):\s*(.*)$")


def probe_environment(config: ProxyConfig, proxy_url: str) -> dict[str, str]:
    """The proxy variables as runs get them; `http_proxy` falls back to the HTTPS proxy, as in
    the on-node test, so a config with only `https_proxy` is still tested through a proxy."""
    values = {"http_proxy": proxy_url, "https_proxy": config.https_proxy, "no_proxy": config.no_proxy}
    env: dict[str, str] = {}
    for name, value in values.items():
        if value:
            env[name] = env[name.upper()] = value
    return env


async def check_proxy_in_container(
    runtime: DockerRuntime,
    image: str,
    config: ProxyConfig,
    targets: list[str],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the limit of each step, as in ProxyTestRequest
    node_id: str | None = None,
    network_mode: str = "host",
    labels: dict[str, str] | None = None,
) -> ProxyTestResult:
    step_timeout = timeout or DEFAULT_TIMEOUT
    proxy_url = config.http_proxy or config.https_proxy
    result = new_result(proxy_url, targets, node_id)
    result.in_container = True
    if not proxy_url:
        result.message = "no proxy configured (set http_proxy or https_proxy)"
        return result
    http_urls = [url for url in targets if not url.lower().startswith("https://")]
    try:
        proxy = ProxyEndpoint.parse(proxy_url)
        http_targets = [Target.parse(url, "http") for url in http_urls]
        output = ""
        if http_targets:
            await runtime.ensure_image(image)
            environment = probe_environment(config, proxy_url)
            output = await asyncio.to_thread(
                _run_probe, runtime, image, environment, http_urls, step_timeout, network_mode, labels or {}
            )
    except ProxyCheckError as exc:
        result.reason, result.message = exc.reason, exc.message
        return result
    except ImageNotFound as exc:
        result.message = f"probe image unavailable: {exc}"
        return result
    except RuntimeError_ as exc:
        result.message = f"could not run the probe container: {exc}"
        return result
    fetched, failure = _classify_output(_scrub(output, proxy), proxy, http_targets, step_timeout)
    result.steps = _in_order(targets, fetched)
    if failure is not None:
        result.reason, result.message = failure.reason, f"from a container: {failure.message}"
        return result
    if not http_targets:
        result.message = f"nothing to test in a container: {HTTPS_NOT_TESTED}"
        return result
    result.ok, result.reason = True, "ok"
    result.message = f"from a container ({image}), proxy {result.proxy} fetched " + ", ".join(
        step.detail or step.target or "" for step in fetched
    )
    if len(http_urls) < len(targets):
        result.message += (
            "; HTTPS was not tested in the container (busybox wget cannot tunnel it through a proxy)"
        )
    return result


def _in_order(targets: list[str], fetched: list[ProxyTestStep]) -> list[ProxyTestStep]:
    """A step per target in the request's order: the fetched ones, then skipped ones saying why."""
    by_target = {step.target: step for step in fetched}
    failed = any(not step.ok for step in fetched)
    steps = []
    for url in targets:
        if url in by_target:
            steps.append(by_target[url])
        elif url.lower().startswith("https://"):
            steps.append(
                ProxyTestStep(name="https", ok=False, skipped=True, detail=HTTPS_SKIPPED, target=url)
            )
        else:
            detail = SKIPPED_AFTER_FAILURE if failed else "not run"
            steps.append(ProxyTestStep(name="http", ok=False, skipped=True, detail=detail, target=url))
    return steps


def _run_probe(
    runtime: DockerRuntime,
    image: str,
    proxy_environment: dict[str, str],
    target_urls: list[str],
    step_timeout: float,
    network_mode: str,
    labels: dict[str, str],
) -> str:
    """Start the probe container, wait for it, return its output; always removes it."""
    seconds = max(1, math.ceil(step_timeout))
    environment = {**proxy_environment, "PROBE_URLS": " ".join(target_urls), "PROBE_TIMEOUT": str(seconds)}
    all_labels = {**labels, **runtime.extra_labels, PROBE_LABEL: "1", LABEL_NODE_ID: runtime.node_id}
    try:
        container = runtime.client.containers.create(
            image,
            command=["sh", "-c", PROBE_SCRIPT],
            name=f"agentnodes-proxycheck-{uuid.uuid4().hex[:12]}",
            environment=environment,
            labels=all_labels,
            network_mode=network_mode,
            detach=True,
            **hardening(DEFAULT_PIDS_LIMIT, runtime.extra_capabilities, runtime.engine),
        )
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"image {image} not present on node") from exc
    except (docker.errors.DockerException, OSError) as exc:
        raise RuntimeError_(str(exc)) from exc
    try:
        container.start()
        try:
            container.wait(timeout=seconds * len(target_urls) + CONTAINER_GRACE_SECONDS)
        except OSError as exc:  # requests' ConnectionError: the wait itself timed out
            raise ProxyCheckError("timeout", f"the probe container did not finish within {seconds}s") from exc
        return bytes(container.logs(stdout=True, stderr=True)).decode("utf-8", errors="replace")
    except docker.errors.DockerException as exc:
        raise RuntimeError_(str(exc)) from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException, OSError):
            container.remove(force=True)


def _scrub(output: str, proxy: ProxyEndpoint) -> str:
    if proxy.password:
        for form in {proxy.password, quote(proxy.password, safe="")}:
            output = output.replace(form, "***")
    return output


def _classify_output(
    output: str, proxy: ProxyEndpoint, targets: list[Target], step_timeout: float
) -> tuple[list[ProxyTestStep], ProxyCheckError | None]:
    """A step per target the probe fetched (it stops at the first failure), and that failure."""
    steps: list[ProxyTestStep] = []
    lines: list[str] = []
    segments: list[tuple[list[str], re.Match[str] | None]] = []
    for line in output.splitlines():
        marker = _STEP_LINE.match(line)
        if marker:
            segments.append((lines, marker))
            lines = []
        else:
            lines.append(line)
    if lines or not segments:
        segments.append((lines, None))  # output without a marker: the probe did not finish a step
    for target, (step_lines, marker) in zip(targets, segments, strict=False):
        step, failure = _classify_step(step_lines, marker, proxy, target, step_timeout)
        steps.append(step)
        if failure is not None:
            return steps, failure
    return steps, None


def _classify_step(
    lines: list[str], marker: re.Match[str] | None, proxy: ProxyEndpoint, target: Target, step_timeout: float
) -> tuple[ProxyTestStep, ProxyCheckError | None]:
    latency = round((float(marker.group(4)) - float(marker.group(3))) * 1000, 1) if marker else None
    exit_code = int(marker.group(2)) if marker else None
    head = _last_response_head(lines)
    failure = _failure(lines, exit_code, head, proxy, target, step_timeout)
    if failure is None:
        detail = f"{target.url} answered {head.describe()}" if head else f"{target.url} fetched"
        status = head.status if head else None
        step = ProxyTestStep(
            name="http", ok=True, latency_ms=latency, detail=detail, status_code=status, target=target.url
        )
        return step, None
    step = ProxyTestStep(
        name="http",
        ok=False,
        latency_ms=latency,
        detail=failure.message,
        status_code=failure.status_code,
        target=target.url,
    )
    return step, failure


def _last_response_head(lines: list[str]) -> ResponseHead | None:
    head: ResponseHead | None = None
    for line in lines:
        status = _STATUS_LINE.match(line)
        if status:
            head = ResponseHead(int(status.group(1)), status.group(2).strip(), {})
            continue
        header = _HEADER_LINE.match(line)
        if head is not None and header:
            head.headers[header.group(1).lower()] = header.group(2).strip()
    return head


def _failure(
    lines: list[str],
    exit_code: int | None,
    head: ResponseHead | None,
    proxy: ProxyEndpoint,
    target: Target,
    step_timeout: float,
) -> ProxyCheckError | None:
    text = "\n".join(lines)
    where = f"{proxy.host}:{proxy.port}"
    if exit_code in (124, 143) or "timed out" in text:
        return ProxyCheckError("timeout", f"timed out after {math.ceil(step_timeout)}s fetching {target.url}")
    if head is not None and head.status == 401 and not head.headers and proxy.username is not None:
        # wget shows no headers of an error answer, so a proxy's 401 (tinyproxy's way to reject
        # credentials) looks like the target's: with credentials set, blame them
        return ProxyCheckError(
            "auth_required",
            f"proxy {proxy.display} rejected the credentials of user {proxy.username!r} (401)",
            401,
        )
    if head is not None:
        try:
            classify_response(proxy, target, head)
        except ProxyCheckError as exc:
            return exc
        if exit_code == 0:
            return None
    if exit_code == 0:
        return None
    if "bad address" in text or "resolve" in text:
        host = urlsplit(proxy.display).hostname
        return ProxyCheckError("dns", f"cannot resolve proxy host {host!r} inside the container")
    if "Connection refused" in text:
        return ProxyCheckError("refused", f"proxy {where} refused the connection from the container")
    last = next((line for line in reversed(lines) if line and not line.startswith("@@")), "no output")
    if exit_code is None:
        return ProxyCheckError("error", f"the probe did not run: {last}")
    return ProxyCheckError("error", f"wget failed (exit {exit_code}): {last}")
