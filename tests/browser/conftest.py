"""Browser fixtures: one Chromium (Debian's) per test session, a fresh tab per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.browser.browser import CHROMIUM, Browser, Tab


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium; missing, it fails the run in CI and skips (saying why) elsewhere."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect

    # Pages refresh every 2 s and the relay's loops run under a loaded CI machine.
    expect.set_options(timeout=15_000)
    b = Browser()
    yield b
    b.close()


@pytest.fixture
async def open_tab(browser: Browser) -> AsyncIterator[Callable[[str], Any]]:
    """Open tabs on a relay's base URL; each checks at teardown that no script error or CSP
    violation happened in it."""
    tabs: list[Tab] = []

    async def open_(base_url: str) -> Tab:
        tab = Tab(browser, base_url)
        await browser.run(tab._open)
        tabs.append(tab)
        return tab

    yield open_
    for tab in tabs:
        await browser.run(tab.context.close)
    assert [e for tab in tabs for e in tab.errors] == []
