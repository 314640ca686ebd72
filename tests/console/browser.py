"""Helpers shared by the console's browser tests (Debian's chromium through Playwright)."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 10_000

expect.set_options(timeout=UI_TIMEOUT_MS)

_csp_violations: WeakKeyDictionary[Page, list[str]] = WeakKeyDictionary()


def new_page(browser: Browser, locale: str = "en-US") -> Page:
    """A page in a fresh browser context: no cookies, empty localStorage and sessionStorage."""
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: pytest.fail(f"JavaScript error in the console: {error}"))
    violations: list[str] = []
    _csp_violations[page] = violations

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", on_console)
    return page


def close_page(page: Page) -> None:
    """Closes the page's context; fails when the page broke the server's Content-Security-Policy."""
    violations = _csp_violations.pop(page, [])
    page.context.close()
    assert not violations, f"the console broke its Content-Security-Policy: {violations}"


def card(page: Page, node_id: str) -> Any:
    return page.locator(f'.node-card[data-node-id="{node_id}"]')


def refresh_now(page: Page) -> None:
    page.evaluate("window.dispatchEvent(new Event('console:refresh'))")
