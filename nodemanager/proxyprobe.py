"""The proxy test from inside a container: what an agent container on this node would see.

Starts a short-lived container of the probe image (PROXY_PROBE_IMAGE, or the request's image)
with the proxy injected exactly as for runs, on the runs' network, and fetches the HTTP and
then the HTTPS target with busybox `wget`. Its error output is mapped to the same reasons as
the on-node test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

from nodeapi import models as m
from nodemanager.proxycheck import DEFAULT_HTTP_TARGET, DEFAULT_HTTPS_TARGET, DEFAULT_TIMEOUT, mask_proxy_url
from nodemanager.runtime.base import RunSpec, Runtime, RuntimeError_
from nodemanager.supervisor import container_env
from nodemanager.workspace import Workspaces

# (substring of wget's message, reason), first match wins
_REASONS: tuple[tuple[str, m.ProxyTestReason], ...] = (
    ("407", "auth_required"),
    ("401", "auth_required"),
    ("refused", "refused"),
    ("timed out", "timeout"),
    ("bad address", "dns"),
    ("name or service", "dns"),
    ("ssl", "tls_error"),
    ("tls", "tls_error"),
    ("certificate", "tls_error"),
    ("server returned error: http/1.1 5", "upstream_error"),
    ("server returned error", "bad_status"),
)


def classify(output: str) -> m.ProxyTestReason:
    lowered = output.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return "error"


async def probe_in_container(
    request: m.ProxyTestRequest,
    runtime: Runtime,
    workspaces: Workspaces,
    *,
    probe_id: str,
    default_image: str,
    labels: dict[str, str],
    node_id: str,
) -> m.ProxyTestResult:
    proxy = request.proxy or m.ProxyConfig()
    step_timeout = request.timeout or DEFAULT_TIMEOUT
    targets = (
        ("http", request.url or DEFAULT_HTTP_TARGET),
        ("https", request.https_url or DEFAULT_HTTPS_TARGET),
    )
    result = m.ProxyTestResult(
        ok=False,
        reason="error",
        message="",
        proxy=mask_proxy_url(proxy.http_proxy or proxy.https_proxy),
        target_http=targets[0][1],
        target_https=targets[1][1],
        in_container=True,
        node_id=node_id,
        tested_at=datetime.now(UTC),
    )
    if not (proxy.http_proxy or proxy.https_proxy):
        result.message = "no proxy configured (set http_proxy or https_proxy)"
        return result
    env = container_env(m.EnvConfig(proxy=proxy), {})
    image = request.image or default_image
    for index, (name, url) in enumerate(targets):
        run_id = f"{probe_id}-{name}"
        command = ["wget", "-q", "-O", "/dev/null", url]  # the deadline is enforced from outside
        if name == "https":
            command.insert(1, "--no-check-certificate")
        spec = RunSpec(run_id, image, command, env, workspaces.path(run_id), labels=labels)
        started = time.perf_counter()
        try:
            exit_code, output = await _run(runtime, workspaces, spec, step_timeout * 2 + 10)
        except (RuntimeError_, TimeoutError) as exc:
            result.reason, result.message = "error", f"cannot run the probe container ({image}): {exc}"
            return result
        step = m.ProxyTestStep(name=name, ok=exit_code == 0, latency_ms=_ms(started), detail=output or None)
        result.steps.append(step)
        if exit_code != 0:
            result.reason = classify(output)
            result.message = (
                f"in a container, {url} through the proxy failed: {output or f'exit {exit_code}'}"
            )
            return result
        if index == len(targets) - 1:
            result.ok, result.reason = True, "ok"
            result.message = (
                f"proxy {result.proxy} works for HTTP and HTTPS from inside a container ({image})"
            )
    return result


async def _run(runtime: Runtime, workspaces: Workspaces, spec: RunSpec, deadline: float) -> tuple[int, str]:
    await asyncio.to_thread(workspaces.create, spec.run_id)
    try:
        await runtime.start(spec)
        async with asyncio.timeout(deadline):
            exit_code = await runtime.wait(spec.run_id)
            lines = [line.text async for line in runtime.logs(spec.run_id)]
        return exit_code, " ".join(line.strip() for line in lines if line.strip())[:500]
    finally:
        with contextlib.suppress(RuntimeError_):
            await runtime.stop(spec.run_id, 0)
        with contextlib.suppress(RuntimeError_):
            await runtime.remove(spec.run_id)
        await asyncio.to_thread(workspaces.remove, spec.run_id)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
