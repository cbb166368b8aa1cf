"""Subscriptions, deliveries and the event feed (domain service). Filled in by the webhooks work."""

from __future__ import annotations

from relay.config import Settings
from relay.store import Store


class WebhookService:
    """Every subscription/delivery/event-feed operation of the API."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
