"""One chromium per console test module; each test opens its own context (tests.console.browser).

Module scope, not session: playwright's sync API keeps an event loop running in this thread
while it is open, and pytest-asyncio cannot run the async tests collected after these until it
is closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from nodeapi.client import Client
from tests.console.browser import CHROMIUM, CHROMIUM_ARGS, close_page, new_page
from tests.support.ports import require_binary
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require_binary(CHROMIUM, "chromium (apt-get install chromium)")
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield instance
    instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = new_page(browser)
    yield page
    close_page(page)


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Client]:
    """The API of the module's `server`."""
    with Client(server.base_url) as client:
        yield client
