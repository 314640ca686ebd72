"""The web console, end to end: a real apiserver process driven through Debian's chromium.

This module runs the server in protected mode (no tokens: no sign-in); test_console_auth.py
covers sign-in, roles and secrets. One chromium serves every console test (conftest.py); each
test gets a fresh browser context (no cookies, clean localStorage / sessionStorage) and its own
node ids, so the tests share the server without interfering.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect

from nodeapi import models as m
from nodeapi.client import Calls, Client
from nodeapi.errors import NotFound
from tests.console.browser import card, new_page, refresh_now
from tests.support.ports import require_binary
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "server" / "console"

MARKUP = "<img src=x onerror=window.injected=1>"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as process:
        yield process


@pytest.fixture
def node_id() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


def register(
    api: Client, node_id: str, labels: dict[str, str], max_concurrent: int = 2, info: m.NodeInfo | None = None
) -> None:
    api.send(
        Calls.heartbeat(
            m.HeartbeatRequest(
                node_id=node_id,
                labels=labels,
                capacity=m.Capacity(max_concurrent=max_concurrent),
                info=info or m.NodeInfo(),
            )
        )
    )


def open_node(page: Page, server: ServerProcess, node_id: str) -> None:
    page.goto(f"{server.base_url}/#/nodes/{node_id}")
    expect(page.locator("#node-basic")).to_contain_text(node_id)


def test_cards_filters_and_language(
    page: Page,
    browser: Browser,
    server: ServerProcess,
    api: Client,
    node_id: Callable[[str], str],
    tmp_path: Path,
) -> None:
    gpu, cpu = node_id("gpu"), node_id("cpu")
    register(api, gpu, {"os": "linux", "gpu": "true"}, max_concurrent=3)
    register(api, cpu, {"os": "linux"}, max_concurrent=2)
    api.send(Calls.patch_node(cpu, m.NodePatch(status="draining")))

    response = httpx.get(f"{server.base_url}/", trust_env=False)
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"

    page.goto(f"{server.base_url}/")
    expect(page.locator(".nav-link.active [data-i18n]")).to_have_text("Nodes")
    # protected mode: no sign-in, no sign-out, no role badge
    expect(page.locator("#signin-page")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_hidden()
    expect(page.locator("#role-badge")).to_be_hidden()
    gpu_card = card(page, gpu)
    expect(gpu_card.locator(".badge")).to_have_text("Online")
    expect(gpu_card.locator(".badge")).to_have_attribute("data-status", "online")
    expect(gpu_card.locator(".chip")).to_have_text(["gpu=true", "os=linux"])
    expect(gpu_card.locator(".capacity-text")).to_have_text("0/3")
    # online: its heartbeat is younger than NODE_OFFLINE_AFTER (the exact time is in the title)
    expect(gpu_card.locator(".heartbeat")).to_have_text("Heartbeat on time")
    expect(gpu_card.locator(".heartbeat")).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(card(page, cpu).locator(".badge")).to_have_text("Draining")

    page.select_option("#filter-status", "draining")
    expect(card(page, gpu)).to_have_count(0)
    expect(card(page, cpu)).to_have_count(1)
    page.select_option("#filter-status", "")
    page.fill("#filter-selector", "gpu=true")
    expect(card(page, cpu)).to_have_count(0)
    expect(card(page, gpu)).to_have_count(1)
    page.fill("#filter-selector", "bad selector!!")
    expect(page.locator("#view .message-error")).to_contain_text("selector")

    page.click("#lang-switch")
    expect(page.locator(".nav-link.active [data-i18n]")).to_have_text("节点管理")
    expect(page.locator("#lang-switch")).to_have_text("EN")
    page.reload()
    expect(page.locator(".nav-link.active [data-i18n]")).to_have_text("节点管理")
    page.fill("#filter-selector", "")
    expect(card(page, gpu).locator(".badge")).to_have_text("在线")
    expect(card(page, cpu).locator(".badge")).to_have_text("维护中")

    chinese_browser = new_page(browser, locale="zh-CN")
    try:
        chinese_browser.goto(f"{server.base_url}/")
        expect(chinese_browser.locator(".nav-link.active [data-i18n]")).to_have_text("节点管理")
        chinese_browser.screenshot(path=str(tmp_path / "console-zh.png"))
    finally:
        chinese_browser.context.close()


def test_a_cjk_font_is_installed_so_chinese_screenshots_are_readable() -> None:
    """Without one (Debian: fonts-noto-cjk) chromium draws Chinese text as empty boxes."""
    fc_list = require_binary("fc-list", "fontconfig's fc-list (comes with chromium)")
    fonts = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=True)
    assert fonts.stdout.strip(), "no font covers Chinese: apt-get install fonts-noto-cjk"


def _strings(source: str, language: str) -> set[str]:
    block = re.search(rf"^const {language} = \{{\n(.*?)^\}};", source, re.S | re.M)
    assert block, f"no dictionary {language} in i18n.js"
    return set(re.findall(r'^  "([\w.]+)":', block.group(1), re.M))


def test_every_console_string_is_in_english_and_chinese() -> None:
    source = (CONSOLE_DIR / "i18n.js").read_text()
    english, chinese = _strings(source, "en"), _strings(source, "zh")
    assert english, "no English strings found"
    assert english - chinese == set(), "strings without a Chinese translation"
    assert chinese - english == set(), "Chinese strings without an English original"
    used = {
        key for path in CONSOLE_DIR.glob("*.js") for key in re.findall(r'\bt\("([\w.]+)"', path.read_text())
    }
    assert used - english == set(), "keys used in the console but missing from i18n.js"


def test_details_and_env_config(
    page: Page, server: ServerProcess, api: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("env")
    info = m.NodeInfo(hostname="worker-7", os="linux", arch="amd64", agent_version="0.1.0")
    register(api, node, {"os": "linux"}, info=info)
    page.goto(f"{server.base_url}/")
    card(page, node).locator(".card-label").first.click()
    expect(page).to_have_url(f"{server.base_url}/#/nodes/{node}")
    expect(page.locator("#node-basic")).to_contain_text("Online")
    expect(page.locator("#node-basic")).to_contain_text("0 running / 2 max")
    expect(page.locator("#node-info")).to_contain_text("worker-7")
    expect(page.locator("#node-info")).to_contain_text("0.1.0")
    expect(page.locator("#node-labels .chip")).to_have_text(["os=linux"])
    expect(page.locator("#node-runs-empty")).to_be_visible()

    page.fill("#env-http-proxy", "http://proxy.internal:3128")
    page.fill("#env-no-proxy", "localhost,.internal")
    page.click("#env-add-var")
    page.locator(".env-row .env-name").last.fill("FOO")
    page.locator(".env-row .env-value").last.fill("bar baz")
    # an auto-refresh that brings news must not wipe what is being typed
    register(api, node, {"os": "linux", "zone": "a"})
    refresh_now(page)
    expect(page.locator("#node-labels .chip")).to_have_text(["os=linux", "zone=a"])
    expect(page.locator("#env-http-proxy")).to_have_value("http://proxy.internal:3128")
    page.click("#env-save")
    expect(page.locator("#env-config .message-success")).to_be_visible()
    saved = api.send(Calls.get_env_config(node))
    assert saved.proxy.http_proxy == "http://proxy.internal:3128"
    assert saved.proxy.no_proxy == "localhost,.internal"
    assert saved.env == {"FOO": "bar baz"}

    page.fill("#env-https-proxy", "not a url")
    page.click("#env-save")
    expect(page.locator("#env-https-proxy")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#env-https-proxy-error")).to_contain_text("https_proxy")
    assert api.send(Calls.get_env_config(node)).proxy.https_proxy is None

    # somebody else saves meanwhile: the stale form is refused, and reload shows their values
    api.send(Calls.put_env_config(node, m.EnvConfig(env={"OTHER": "1"})))
    page.fill("#env-https-proxy", "")
    page.click("#env-save")
    expect(page.locator("#env-config .message-error")).to_contain_text("changed")
    page.click("#env-reload")
    expect(page.locator(".env-row .env-name")).to_have_value("OTHER")
    assert api.send(Calls.get_env_config(node)).env == {"OTHER": "1"}
    # a form without unsaved input follows changes made elsewhere
    api.send(Calls.put_env_config(node, m.EnvConfig(env={"THIRD": "3"})))
    refresh_now(page)
    expect(page.locator(".env-row .env-name")).to_have_value("THIRD")


def test_a_held_back_node_shows_why(
    page: Page, server: ServerProcess, api: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("sick")
    api.send(
        Calls.heartbeat(
            m.HeartbeatRequest(
                node_id=node,
                conditions=[
                    m.ConditionReport(type="runtime", ok=True, message="docker 26.1"),
                    m.ConditionReport(type="disk", ok=False, message="40 MiB free under /ws"),
                ],
            )
        )
    )
    page.goto(f"{server.base_url}/")
    badge = card(page, node).locator("[data-status=unschedulable]")
    expect(badge).to_have_text("Unschedulable")
    expect(badge).to_have_attribute("title", "disk: 40 MiB free under /ws")

    open_node(page, server, node)
    expect(page.locator("#node-basic")).to_contain_text("Takes new runs")
    expect(page.locator("#node-conditions [data-condition=disk]")).to_contain_text("Failing")
    expect(page.locator("#node-conditions [data-condition=disk]")).to_contain_text("40 MiB free under /ws")
    expect(page.locator("#node-conditions [data-condition=runtime]")).to_contain_text("OK")
    expect(page.locator(".title-row [data-status=unschedulable]")).to_be_visible()
    page.click("#lang-switch")
    expect(page.locator(".title-row [data-status=unschedulable]")).to_have_text("不可调度")
    expect(page.locator("#node-conditions [data-condition=disk]")).to_contain_text("异常")
    page.click("#lang-switch")


def test_drain_edit_and_delete(
    page: Page, server: ServerProcess, api: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("ops")
    register(api, node, {"os": "linux", "tier": "gold"})
    open_node(page, server, node)

    page.click("#drain-node")
    expect(page.locator("#undrain-node")).to_be_visible()
    assert api.send(Calls.get_node(node)).status == "draining"
    page.click("#undrain-node")
    expect(page.locator("#drain-node")).to_be_visible()
    assert api.send(Calls.get_node(node)).status == "online"

    page.click("#edit-node")
    dialog = page.locator("dialog.dialog-edit")
    dialog.locator('.label-row:has(input[value="tier"]) .remove-row').click()
    dialog.locator("#add-label").click()
    dialog.locator(".label-key").last.fill("zone")
    dialog.locator(".label-value").last.fill("eu-1")
    dialog.locator("#edit-status").select_option("draining")
    dialog.locator("#edit-save").click()
    expect(dialog).to_have_count(0)
    updated = api.send(Calls.get_node(node))
    assert updated.labels == {"os": "linux", "zone": "eu-1"}
    assert updated.status == "draining"
    # the removal sticks although the node keeps reporting the label
    register(api, node, {"os": "linux", "tier": "gold"})
    assert "tier" not in api.send(Calls.get_node(node)).labels

    refresh_now(page)
    page.click("#delete-node")
    page.click("#delete-cancel")
    expect(page.locator("dialog.dialog-delete")).to_have_count(0)
    assert api.send(Calls.get_node(node)).id == node
    page.click("#delete-node")
    page.click("#delete-confirm")
    expect(page).to_have_url(f"{server.base_url}/#/nodes")
    with pytest.raises(NotFound):
        api.send(Calls.get_node(node))
    expect(card(page, node)).to_have_count(0)


def test_delete_refused_while_a_run_is_active_and_runs_page(
    page: Page, server: ServerProcess, api: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("busy")
    register(api, node, {"pool": node})
    run = api.send(
        Calls.create_run(
            m.RunCreate(image="busybox:test", command=["sleep", MARKUP], node_selector={"pool": node})
        )
    )
    wait_until(lambda: api.send(Calls.get_run(run.id)).status == "scheduled", what="the run to be scheduled")
    try:
        open_node(page, server, node)
        expect(page.locator("#node-runs")).to_contain_text(run.id)
        page.click("#delete-node")
        page.click("#delete-confirm")
        expect(page.locator("dialog.dialog-delete .message-error")).to_contain_text(run.id)
        page.click("#delete-cancel")
        assert api.send(Calls.get_node(node)).id == node

        page.click(f"#node-runs a:has-text('{run.id}')")
        expect(page.locator("#run-summary")).to_contain_text("busybox:test")
        expect(page.locator("#run-summary")).to_contain_text(node)
        expect(page.locator("#run-summary code")).to_have_text(f"sleep {MARKUP}")
        assert page.evaluate("window.injected") is None, "server-provided text must never become markup"
        expect(page.locator("#run-events")).to_contain_text("scheduled")
        page.click(".nav-link[data-nav=runs]")
        expect(page.locator(f'#runs-table tr[data-run-id="{run.id}"]')).to_contain_text("Scheduled")
    finally:
        api.send(Calls.cancel_run(run.id))


def _answer_one_proxy_test(server: ServerProcess, node: str, seen: list[dict[str, Any]]) -> None:
    """A stand-in NodeManager: waits for the test_proxy command and answers it."""
    with Client(server.base_url) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            work = client.send(Calls.poll_work(node, wait=2.0))
            commands = [command for command in work.commands if command.type == "test_proxy"]
            if not commands:
                continue
            seen.append(commands[0].payload)
            result = m.ProxyTestResult(
                ok=False,
                reason="refused",
                message="the proxy refused the connection",
                proxy=commands[0].payload["proxy"]["http_proxy"],
                steps=[
                    m.ProxyTestStep(name="connect", ok=False, latency_ms=3.2, detail="connection refused"),
                ],
            )
            client.send(
                Calls.post_command_result(
                    node, commands[0].id, m.CommandResult(ok=False, result=msgspec.to_builtins(result))
                )
            )
            return


def test_proxy_test_uses_the_unsaved_form(
    page: Page, server: ServerProcess, api: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("proxy")
    register(api, node, {"os": "linux"})
    seen: list[dict[str, Any]] = []
    fake_node = threading.Thread(target=_answer_one_proxy_test, args=(server, node, seen), daemon=True)
    fake_node.start()
    open_node(page, server, node)
    page.fill("#env-http-proxy", "http://127.0.0.1:9")
    page.click("#env-test-proxy")
    result = page.locator("#proxy-test-output .proxy-result")
    expect(result).to_have_attribute("data-reason", "refused")
    expect(result).to_contain_text("Proxy refused the connection")
    expect(result.locator(".proxy-steps")).to_contain_text("3 ms")
    fake_node.join(timeout=10)
    assert seen[0]["proxy"]["http_proxy"] == "http://127.0.0.1:9"
    assert api.send(Calls.get_env_config(node)).proxy.http_proxy is None, "testing must not save"
    refresh_now(page)
    expect(page.locator("#node-proxy-test .proxy-result")).to_have_attribute("data-reason", "refused")
