"""One chromium for every console test; each test opens its own context (tests.console.browser)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.console.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.ports import require_binary


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    require_binary(CHROMIUM, "chromium (apt-get install chromium)")
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield instance
    instance.close()
