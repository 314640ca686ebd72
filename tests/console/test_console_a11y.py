"""Every console page passes axe-core's WCAG 2 A and AA rules, in English and in Chinese.

A real apiserver with tokens (so the sign-in page is checked too), signed in as an admin (every
control shown) and as a viewer (the read-only views); nodes in each status, one held back by a
failing condition, a queued run with events. axe-core is the copy shipped by the
`axe-playwright-python` package (tests/console/axe.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.console.axe import assert_accessible, axe_violations
from tests.console.browser import card, close_page, new_page
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ADMIN = "a11y-admin-token"
VIEWER = "a11y-viewer-token"
JOIN = "a11y-join-token"
LOCALES = {"en": "en-US", "zh": "zh-CN"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"ADMIN_TOKEN": ADMIN, "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN}
    with ServerProcess(env=env) as process:
        yield process


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> dict[str, str]:
    """Nodes online (with resources and a proxy config), draining and held back; a queued run."""
    suffix = uuid.uuid4().hex[:6]
    ids = {name: f"a11y-{name}-{suffix}" for name in ("online", "draining", "held")}
    with Client(server.base_url, JOIN) as join:
        for name, node_id in ids.items():
            conditions = [m.ConditionReport(type="disk", ok=name != "held", message="92% full")]
            join.send(
                Calls.heartbeat(
                    m.HeartbeatRequest(
                        node_id=node_id,
                        labels={"os": "linux", "zone": "a"},
                        capacity=m.Capacity(max_concurrent=4, cpus=4.0, memory_mb=8192),
                        info=m.NodeInfo(hostname=f"host-{name}", os="linux", arch="x86_64"),
                        conditions=conditions,
                    )
                )
            )
    with Client(server.base_url, ADMIN) as admin:
        admin.send(Calls.patch_node(ids["draining"], m.NodePatch(status="draining")))
        admin.send(
            Calls.put_env_config(
                ids["online"],
                m.EnvConfig(
                    proxy=m.ProxyConfig(http_proxy="http://user:pw@proxy.example:3128", no_proxy="localhost"),
                    env={"LOG_LEVEL": "debug"},
                    secret_env={"API_KEY": "secret"},
                ),
            )
        )
        run = admin.send(
            Calls.create_run(m.RunCreate(image="busybox", command=["true"], node_selector={"gpu": "x"}))
        )
    return {**ids, "run": run.id}


def signed_in(browser: Browser, server: ServerProcess, token: str, language: str) -> Page:
    page = new_page(browser, locale=LOCALES[language])
    page.goto(f"{server.base_url}/")
    expect(page.locator("#signin-token")).to_be_focused()
    assert_accessible(page, f"the sign-in page ({language})")
    page.fill("#signin-token", token)
    page.click("#signin-submit")
    expect(page.locator("#app-shell")).to_be_visible()
    return page


@pytest.mark.parametrize("language", ["en", "zh"])
def test_admin_pages_pass_axe(
    browser: Browser, server: ServerProcess, fleet: dict[str, str], language: str
) -> None:
    page = signed_in(browser, server, ADMIN, language)
    try:
        expect(card(page, fleet["held"])).to_have_count(1)
        expect(page.locator("#live-state")).to_have_attribute("data-live", "true")
        assert_accessible(page, f"the node list ({language})")
        if language == "en":
            # the check is real: a capacity meter without its accessible name is reported
            page.evaluate("document.querySelector('.meter').removeAttribute('aria-label')")
            assert "aria-meter-name" in {violation["id"] for violation in axe_violations(page)}

        # a filter that matches nothing, a selector the server refuses, a card marked changed
        page.fill("#filter-search", "no-such-node")
        expect(page.locator(".empty")).to_be_visible()
        assert_accessible(page, f"the empty node list ({language})")
        page.fill("#filter-search", "")
        page.fill("#filter-selector", "bad key=x")
        expect(page.locator(".message-error")).to_be_visible()
        assert_accessible(page, f"the node list with a refused selector ({language})")
        page.fill("#filter-selector", "")
        page.select_option("#filter-status", "online")
        expect(card(page, fleet["online"])).to_have_count(1)
        with Client(server.base_url, ADMIN) as admin:
            admin.send(Calls.patch_node(fleet["online"], m.NodePatch(status="draining")))
            try:
                expect(card(page, fleet["online"]).locator(".stale-note")).to_be_visible()
                assert_accessible(page, f"the node list with a changed card ({language})")
            finally:
                admin.send(Calls.patch_node(fleet["online"], m.NodePatch(status="online")))
        page.select_option("#filter-status", "")

        page.goto(f"{server.base_url}/#/nodes/{fleet['online']}")
        expect(page.locator("#node-basic")).to_contain_text(fleet["online"])
        expect(page.locator("#env-form")).to_be_visible()
        assert_accessible(page, f"a node's page with its environment form ({language})")

        page.click("#edit-node")
        expect(page.locator("dialog[open]")).to_be_visible()
        assert_accessible(page, f"the edit-node dialog ({language})")
        page.keyboard.press("Escape")
        expect(page.locator("dialog[open]")).to_have_count(0)
        page.click("#delete-node")
        expect(page.locator("dialog.dialog-delete")).to_be_visible()
        assert_accessible(page, f"the delete-node dialog ({language})")
        page.keyboard.press("Escape")
        expect(page.locator("dialog[open]")).to_have_count(0)

        page.goto(f"{server.base_url}/#/nodes/{fleet['held']}")
        expect(page.locator("#node-conditions")).to_contain_text("disk")
        assert_accessible(page, f"a held-back node's page ({language})")

        page.goto(f"{server.base_url}/#/runs")
        expect(page.locator("#runs-table")).to_contain_text(fleet["run"])
        assert_accessible(page, f"the run list ({language})")

        page.goto(f"{server.base_url}/#/runs/{fleet['run']}")
        expect(page.locator("#run-summary")).to_contain_text("busybox")
        assert_accessible(page, f"a run's page ({language})")
    finally:
        close_page(page)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_viewer_pages_pass_axe(
    browser: Browser, server: ServerProcess, fleet: dict[str, str], language: str
) -> None:
    page = signed_in(browser, server, VIEWER, language)
    try:
        expect(card(page, fleet["draining"])).to_have_count(1)
        assert_accessible(page, f"the viewer's node list ({language})")
        page.goto(f"{server.base_url}/#/nodes/{fleet['online']}")
        expect(page.locator("#env-readonly")).to_be_visible()
        assert_accessible(page, f"the viewer's node page ({language})")
    finally:
        close_page(page)
