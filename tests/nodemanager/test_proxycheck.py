"""The on-node and in-container proxy tests against real proxies (tinyproxy, proxy.py) and targets
on loopback."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from nodeapi.models import ProxyConfig, ProxyTestResult
from nodemanager.proxycheck import (
    DEFAULT_HTTP_TARGET,
    DEFAULT_HTTPS_TARGET,
    check_proxy,
    check_proxy_config,
    mask_proxy_url,
    targets_of,
    tls_context,
)
from nodemanager.proxycheck_container import check_proxy_in_container, probe_environment
from nodemanager.runtime.docker import DockerRuntime
from tests.support.images import TEST_LABELS
from tests.support.proxies import (
    PROXY_PASSWORD,
    PROXY_USER,
    Blackhole,
    ProxyProcess,
    SelfSignedCert,
    TargetServer,
)

PROXIES = ["tinyproxy", "proxy_py"]
AUTH_PROXIES = ["tinyproxy_auth", "proxy_py_auth"]


def assert_no_password(result: ProxyTestResult) -> None:
    assert PROXY_PASSWORD not in msgspec.json.encode(result).decode()


async def test_mask_proxy_url_hides_only_the_password() -> None:
    assert mask_proxy_url("http://agent:pa%40ss@proxy.local:3128") == "http://agent:***@proxy.local:3128"
    assert mask_proxy_url("http://proxy.local:3128") == "http://proxy.local:3128"
    assert mask_proxy_url("http://agent@proxy.local:3128") == "http://agent@proxy.local:3128"
    assert mask_proxy_url(None) is None


@pytest.mark.parametrize("proxy_name", PROXIES)
async def test_a_working_proxy_passes_every_step(
    request: pytest.FixtureRequest,
    proxy_name: str,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    targets = [http_target.url(), https_target.url()]
    result = await check_proxy(proxy.url(), targets, timeout=5, ca_file=str(target_cert.cert_file))
    assert (result.ok, result.reason) == (True, "ok"), result.message
    assert [(step.name, step.ok, step.target) for step in result.steps] == [
        ("connect", True, None),
        ("http", True, targets[0]),
        ("https", True, targets[1]),
    ]
    assert (result.targets, result.target_http, result.target_https) == (targets, *targets)
    assert all(step.latency_ms is not None and step.latency_ms >= 0 for step in result.steps)
    assert [step.status_code for step in result.steps[1:]] == [200, 200]


@pytest.mark.parametrize("proxy_name", AUTH_PROXIES)
async def test_proxy_credentials(
    request: pytest.FixtureRequest,
    proxy_name: str,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    ca_file = str(target_cert.cert_file)
    targets = [http_target.url(), https_target.url()]

    missing = await check_proxy(proxy.url(), targets, timeout=5, ca_file=ca_file)
    assert (missing.ok, missing.reason) == (False, "auth_required")
    assert "requires authentication" in missing.message

    wrong = await check_proxy(
        proxy.url(PROXY_USER, "wrong-" + PROXY_PASSWORD), targets, timeout=5, ca_file=ca_file
    )
    assert (wrong.ok, wrong.reason) == (False, "auth_required")
    assert "rejected the credentials" in wrong.message
    assert_no_password(wrong)

    right = await check_proxy(proxy.url(PROXY_USER, PROXY_PASSWORD), targets, timeout=5, ca_file=ca_file)
    assert (right.ok, right.reason) == (True, "ok"), right.message
    assert right.proxy == f"http://{PROXY_USER}:***@127.0.0.1:{proxy.port}"
    assert_no_password(right)


async def test_https_step_uses_the_https_proxy_and_a_connect_401_is_auth_required(
    tinyproxy_auth: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    """tinyproxy answers a CONNECT with bad credentials by 401, not 407."""
    config = ProxyConfig(
        http_proxy=tinyproxy_auth.url(PROXY_USER, PROXY_PASSWORD),
        https_proxy=tinyproxy_auth.url(PROXY_USER, "wrong"),
    )
    result = await check_proxy_config(
        config, [http_target.url(), https_target.url()], timeout=5, ca_file=str(target_cert.cert_file)
    )
    assert (result.reason, [step.ok for step in result.steps]) == ("auth_required", [True, True, False])
    assert result.steps[-1].status_code == 401


async def test_only_the_named_targets_are_fetched_each_through_its_schemes_proxy(
    tinyproxy: ProxyProcess,
    closed_port: int,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    """Two http:// targets and no https:// one: the HTTPS proxy (a closed port) is never used,
    and no default target is fetched (no network beyond loopback needed)."""
    config = ProxyConfig(http_proxy=tinyproxy.url(), https_proxy=f"http://127.0.0.1:{closed_port}")
    two_http = [http_target.url("/a"), http_target.url("/b")]
    result = await check_proxy_config(config, two_http, timeout=5)
    assert result.ok, result.message
    assert [(step.name, step.target) for step in result.steps] == [("connect", None)] + [
        ("http", url) for url in two_http
    ]
    assert (result.targets, result.target_https) == (two_http, None)
    only_https = await check_proxy_config(
        config, [https_target.url()], timeout=5, ca_file=str(target_cert.cert_file)
    )
    assert (only_https.ok, only_https.reason) == (False, "refused")  # went to the HTTPS proxy
    assert [(step.name, step.skipped) for step in only_https.steps] == [("connect", False), ("https", True)]


def test_a_request_naming_no_target_gets_the_defaults() -> None:
    assert targets_of([], None, None) == [DEFAULT_HTTP_TARGET, DEFAULT_HTTPS_TARGET]
    assert targets_of(["https://a/", "http://b/"], "http://b/", None) == ["https://a/", "http://b/"]
    assert targets_of([], None, "https://only/") == ["https://only/"]


async def test_closed_proxy_port_is_refused(closed_port: int, http_target: TargetServer) -> None:
    result = await check_proxy(f"http://127.0.0.1:{closed_port}", [http_target.url()], timeout=3)
    assert (result.ok, result.reason) == (False, "refused")
    assert [(step.name, step.ok, step.skipped) for step in result.steps] == [
        ("connect", False, False),
        ("http", False, True),  # not run, and said so
    ]


async def test_a_proxy_that_never_answers_times_out(blackhole: Blackhole, http_target: TargetServer) -> None:
    result = await check_proxy(blackhole.url(), [http_target.url()], timeout=0.5)
    assert (result.ok, result.reason) == (False, "timeout")
    assert [(step.name, step.ok) for step in result.steps] == [("connect", True), ("http", False)]
    assert "timed out after 0.5s" in result.message


@pytest.mark.parametrize("proxy_name", PROXIES)
async def test_unreachable_target_is_an_upstream_error(
    request: pytest.FixtureRequest, proxy_name: str, closed_port: int
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    result = await check_proxy(proxy.url(), [f"http://127.0.0.1:{closed_port}/"], timeout=5)
    assert (result.ok, result.reason) == (False, "upstream_error")
    assert [step.ok for step in result.steps] == [True, False]
    assert result.steps[-1].status_code in (500, 502)  # tinyproxy's and proxy.py's way to say it


@pytest.mark.parametrize("proxy_name", PROXIES)
async def test_unreachable_https_target_is_an_upstream_error(
    request: pytest.FixtureRequest, proxy_name: str, http_target: TargetServer, closed_port: int
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    result = await check_proxy(
        proxy.url(), [http_target.url(), f"https://127.0.0.1:{closed_port}/"], timeout=5
    )
    assert (result.ok, result.reason) == (False, "upstream_error")
    assert [step.ok for step in result.steps] == [True, True, False]


@pytest.mark.parametrize("proxy_name", PROXIES)
async def test_target_error_status_is_bad_status(
    request: pytest.FixtureRequest, proxy_name: str, http_target: TargetServer
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    result = await check_proxy(proxy.url(), [http_target.url("/fail")], timeout=5)
    assert (result.ok, result.reason) == (False, "bad_status")
    assert result.steps[-1].status_code == 500


async def test_untrusted_tls_target_is_a_tls_error_and_ok_with_its_ca(
    tinyproxy: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    targets = [http_target.url(), https_target.url()]
    untrusted = await check_proxy(tinyproxy.url(), targets, timeout=5)
    assert (untrusted.ok, untrusted.reason) == (False, "tls_error")
    assert "certificate verify failed" in untrusted.message
    trusted = await check_proxy(tinyproxy.url(), targets, timeout=5, ca_file=str(target_cert.cert_file))
    assert trusted.ok, trusted.message
    unverified = await check_proxy(tinyproxy.url(), targets, timeout=5, verify=False)
    assert unverified.ok, unverified.message


async def test_https_target_error_status_is_bad_status(
    proxy_py: ProxyProcess, http_target: TargetServer, https_target: TargetServer, target_cert: SelfSignedCert
) -> None:
    result = await check_proxy(
        proxy_py.url(),
        [http_target.url(), https_target.url("/fail")],
        timeout=5,
        ca_file=str(target_cert.cert_file),
    )
    assert (result.reason, result.steps[-1].status_code) == ("bad_status", 500)


async def test_unresolvable_proxy_host_is_dns(http_target: TargetServer) -> None:
    result = await check_proxy(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.nonexistent.invalid:3128", [http_target.url()], timeout=3
    )
    assert (result.ok, result.reason) == (False, "dns")
    assert result.proxy == f"http://{PROXY_USER}:***@proxy.nonexistent.invalid:3128"
    assert_no_password(result)


async def test_unsupported_schemes_and_missing_config_are_clear_errors() -> None:
    socks = await check_proxy(f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080", ["http://127.0.0.1/"])
    assert (socks.reason, socks.ok) == ("error", False)
    assert "not supported" in socks.message
    assert_no_password(socks)
    empty = await check_proxy_config(ProxyConfig(), ["http://127.0.0.1/"])
    assert (empty.reason, empty.message) == ("error", "no proxy configured (set http_proxy or https_proxy)")


async def test_the_ca_file_adds_to_the_system_trust_store(
    tinyproxy: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
) -> None:
    context = tls_context(ca_file=str(target_cert.cert_file))
    system_only = tls_context()
    assert len(context.get_ca_certs()) == len(system_only.get_ca_certs()) + 1
    missing = await check_proxy(
        tinyproxy.url(), [http_target.url(), https_target.url()], timeout=5, ca_file="/nonexistent/ca.pem"
    )
    assert (missing.ok, missing.reason) == (False, "error")
    assert "cannot load the CA file /nonexistent/ca.pem" in missing.message


@pytest.mark.docker
async def test_in_container_variant_takes_the_agents_network_path(
    docker_client: Any,
    test_image: str,
    tinyproxy_auth: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
    closed_port: int,
) -> None:
    runtime = DockerRuntime(docker_client, "test-node-proxy", pull_policy="never", extra_labels=TEST_LABELS)
    targets = [http_target.url(), https_target.url()]

    def config(url: str) -> ProxyConfig:
        return ProxyConfig(http_proxy=url, https_proxy=url, no_proxy="example.invalid")

    working = await check_proxy_in_container(
        runtime, test_image, config(tinyproxy_auth.url(PROXY_USER, PROXY_PASSWORD)), targets, timeout=5
    )
    assert (working.ok, working.reason, working.in_container) == (True, "ok", True), working.message
    assert [(s.name, s.ok, s.skipped) for s in working.steps] == [
        ("http", True, False),
        ("https", False, True),
    ]
    assert working.steps[0].status_code == 200
    assert "busybox wget cannot tunnel HTTPS" in (working.steps[1].detail or "")
    assert "HTTPS was not tested" in working.message
    assert_no_password(working)

    rejected = await check_proxy_in_container(
        runtime, test_image, config(tinyproxy_auth.url(PROXY_USER, "wrong")), targets, timeout=5
    )
    assert (rejected.ok, rejected.reason) == (False, "auth_required")
    assert [(step.name, step.ok, step.skipped) for step in rejected.steps] == [
        ("http", False, False),
        ("https", False, True),
    ]

    refused = await check_proxy_in_container(
        runtime, test_image, config(f"http://127.0.0.1:{closed_port}"), targets, timeout=5
    )
    assert (refused.ok, refused.reason) == (False, "refused")

    https_only = await check_proxy_in_container(
        runtime, test_image, ProxyConfig(https_proxy=f"http://127.0.0.1:{closed_port}"), targets, timeout=5
    )
    assert https_only.reason == "refused"  # http_proxy falls back to the HTTPS proxy, as on the node

    missing_image = await check_proxy_in_container(
        runtime,
        "agentnodes-test/absent:latest",
        config(f"http://127.0.0.1:{closed_port}"),
        targets,
        timeout=5,
    )
    assert (missing_image.ok, missing_image.reason) == (False, "error")
    assert "probe image unavailable" in missing_image.message

    two = [http_target.url("/a"), http_target.url("/fail"), http_target.url("/c")]
    stops = await check_proxy_in_container(
        runtime, test_image, config(tinyproxy_auth.url(PROXY_USER, PROXY_PASSWORD)), two, timeout=5
    )
    assert (stops.ok, stops.reason) == (False, "bad_status")
    assert [(step.target, step.ok, step.skipped) for step in stops.steps] == [
        (two[0], True, False),
        (two[1], False, False),
        (two[2], False, True),  # not run after the failure
    ]

    probes = docker_client.containers.list(
        all=True, filters={"label": "agentnodes.proxycheck=1"}, ignore_removed=True
    )
    assert [c for c in probes if c.labels.get("agentnodes.node_id") == "test-node-proxy"] == []


def test_probe_environment_injects_both_cases() -> None:
    env = probe_environment(ProxyConfig(https_proxy="http://p:1", no_proxy="a.example"), "http://p:1")
    assert env == {
        "http_proxy": "http://p:1",
        "HTTP_PROXY": "http://p:1",
        "https_proxy": "http://p:1",
        "HTTPS_PROXY": "http://p:1",
        "no_proxy": "a.example",
        "NO_PROXY": "a.example",
    }
