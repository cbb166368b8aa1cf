"""Chromium driven by Playwright's sync API on one dedicated thread, and tabs in it.

The thread keeps the test's event loop (with the relay, the simulator and the receiver in
it) serving while the browser waits on the page.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = Path(os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless and quiet: no GPU, no background calls home (the machine has no internet).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


class Browser:
    """Chromium on its own thread; `run` calls a function there with Playwright's sync API."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="playwright")
        self._thread.submit(self._launch).result()

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.chromium = self._playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the browser's thread, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def close(self) -> None:
        """Close Chromium and the thread."""

        def stop() -> None:
            self.chromium.close()
            self._playwright.stop()

        self._thread.submit(stop).result()
        self._thread.shutdown()


class Tab:
    """One browser context and page (its own cookies), and what went wrong in it."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.errors: list[str] = []

    def _open(self) -> None:
        self.context = self.browser.chromium.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: (
                self.errors.append(msg.text) if "Content Security Policy" in msg.text else None
            ),
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(page, *args)` on the browser thread."""
        return await self.browser.run(fn, self.page, *args)

    def screenshot(self, name: str) -> None:
        """docs/console/NAME.png, only when RELAY_CONSOLE_SCREENSHOTS=1 (CI leaves them be)."""
        if os.environ.get("RELAY_CONSOLE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
