"""The event feed (`GET /v1/events`): positions, opaque cursors and the page query.

Events are ordered by the id of the transaction that wrote them, then by seq, and a page
shows only what lies below the oldest transaction still running (docs/architecture.md: "The
event feed's order"). `EventFeed` is mixed into `WebhookService`, which owns the store.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from relay.core.errors import FieldError, InvalidRequest
from relay.core.pagination import keyset_page
from relay.core.store import Store
from relay.identity.clients import Client

# Opaque feed cursors carry this prefix inside their base64, so a stray string is refused.
_FEED_CURSOR_PREFIX = "tx:"
# Cursors handed out before the feed was ordered by transaction (seq alone).
_LEGACY_CURSOR_PREFIX = "seq:"


@dataclass(frozen=True, order=True)
class FeedPosition:
    """A place in the event feed: the writing transaction's id, then the event's seq."""

    txid: int
    seq: int


FEED_START = FeedPosition(0, 0)


def encode_feed_cursor(position: FeedPosition) -> str:
    """The opaque `next_cursor` of the event feed for a position."""
    text = f"{_FEED_CURSOR_PREFIX}{position.txid}:{position.seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_feed_cursor(cursor: str) -> FeedPosition | int | None:
    """The feed position of a cursor from `encode_feed_cursor`; an int (a seq) for a cursor
    handed out before the feed was ordered by transaction; None when it is neither."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if text.startswith(_FEED_CURSOR_PREFIX):
        txid, _, seq = text.removeprefix(_FEED_CURSOR_PREFIX).partition(":")
        if txid.isdigit() and seq.isdigit():
            return FeedPosition(int(txid), int(seq))
        return None
    seq = text.removeprefix(_LEGACY_CURSOR_PREFIX)
    if seq == text or not seq.isdigit():
        return None
    return int(seq)


class EventFeed:
    """The event-feed operations of `WebhookService`."""

    store: Store

    async def list_events(
        self, client: Client, *, after: str | None, types: list[str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Webhook bodies the client is entitled to, oldest first, after a cursor or event id.

        `next_cursor` is set when more events follow right now; a consumer that reached the
        end resumes later with the id of the last event it saw.
        """
        position = await self._feed_position(client, after)
        rows = await self.store.fetch(
            "list_webhook_events",
            scope=client.scope,
            after_txid=position.txid,
            after_seq=position.seq,
            types=types,
            limit=limit + 1,
        )
        page, next_cursor = keyset_page(
            rows, limit, lambda row: encode_feed_cursor(FeedPosition(int(row["txid"]), row["seq"]))
        )
        return [row["payload"] for row in page], next_cursor

    async def _feed_position(self, client: Client, after: str | None) -> FeedPosition:
        if not after:
            return FEED_START
        decoded = None if after.startswith("evt_") else decode_feed_cursor(after)
        if decoded is None and not after.startswith("evt_"):
            raise InvalidRequest(
                "invalid cursor",
                [FieldError("/query/after", "expected a next_cursor value or an evt_ id")],
            )
        if isinstance(decoded, FeedPosition):
            return decoded
        row = await self.store.fetchrow(
            "webhook_event_position",
            id=after if decoded is None else None,
            seq=decoded,
            scope=client.scope,
        )
        if row is None:
            raise InvalidRequest("unknown event id", [FieldError("/query/after", "no such event")])
        return FeedPosition(int(row["txid"]), row["seq"])
