"""Delivers signed webhooks from the outbox. Filled in by the webhooks work."""

from __future__ import annotations

import aiohttp

from relay.config import Settings
from relay.loops import Loop
from relay.store import Store


def create_webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The one ClientSession webhooks leave through."""
    return aiohttp.ClientSession()


class Dispatcher(Loop):
    """Claims due deliveries, sends them, records the outcome."""

    name = "dispatcher"

    def __init__(self, store: Store, session: aiohttp.ClientSession, settings: Settings) -> None:
        super().__init__(settings.dispatch_idle_poll_s)
        self.store = store
        self.session = session
        self.settings = settings

    async def run_once(self) -> int:
        """One pass."""
        return 0
