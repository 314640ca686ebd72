"""Pytest plugin: loopback proxies and targets (tests.support.proxies), registered in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.proxies import (
    PROXY_PASSWORD,
    PROXY_USER,
    Blackhole,
    ProxyProcess,
    SelfSignedCert,
    TargetServer,
    make_self_signed_cert,
    start_proxy_py,
    start_tinyproxy,
)


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxies")


@pytest.fixture(scope="module")
def tinyproxy(proxy_dir: Path) -> Iterator[ProxyProcess]:
    proxy = start_tinyproxy(proxy_dir)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tinyproxy_auth(proxy_dir: Path) -> Iterator[ProxyProcess]:
    proxy = start_tinyproxy(proxy_dir, (PROXY_USER, PROXY_PASSWORD))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def proxy_py(proxy_dir: Path) -> Iterator[ProxyProcess]:
    proxy = start_proxy_py(proxy_dir)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def proxy_py_auth(proxy_dir: Path) -> Iterator[ProxyProcess]:
    proxy = start_proxy_py(proxy_dir, (PROXY_USER, PROXY_PASSWORD))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def target_cert(proxy_dir: Path) -> SelfSignedCert:
    return make_self_signed_cert(proxy_dir)


@pytest.fixture(scope="module")
def http_target() -> Iterator[TargetServer]:
    server = TargetServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def https_target(target_cert: SelfSignedCert) -> Iterator[TargetServer]:
    server = TargetServer(target_cert.server_context())
    yield server
    server.stop()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def closed_port() -> int:
    return free_port()
