"""Redelivery: recovering what a subscription missed, bulk retries and test events.

`Redelivery` is mixed into `WebhookService`, which owns the store, the clock and the
bound on how much one call queues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from relay.audit import action_log as actions
from relay.audit.action_log import Actor, record_action
from relay.core.errors import Conflict, NotFound
from relay.core.ids import new_id
from relay.core.payloads import subscription_test_body
from relay.core.store import OUTBOX_CHANNEL, Store
from relay.identity.clients import Client

log = structlog.get_logger(__name__)

# Deliveries one recover or bulk-retry call queues at most: one bounded statement (about a
# second of work), and the answer says `more` so the caller repeats for the rest.
BULK_LIMIT = 10_000
# The type of the event `POST /v1/subscriptions/{id}/test` sends (not a task event).
TEST_EVENT_TYPE = "webhook.test"


@dataclass(frozen=True)
class BulkResult:
    """What a recover or bulk retry queued, and whether matching deliveries remain."""

    queued: int
    more: bool


@dataclass(frozen=True)
class DeliveryFilter:
    """Which failed or dead deliveries `POST /v1/deliveries/retry` sends again."""

    subscription_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    task_id: str | None = None


class Redelivery:
    """The recover, bulk-retry and test-event operations of `WebhookService`."""

    store: Store
    clock: Callable[[], float]
    bulk_limit: int

    if TYPE_CHECKING:  # provided by WebhookService

        async def get_subscription(
            self, client: Client, subscription_id: str
        ) -> dict[str, Any]: ...

        async def get_delivery(self, client: Client, delivery_id: str) -> dict[str, Any]: ...

    async def recover(
        self,
        client: Client,
        subscription_id: str,
        since: datetime,
        *,
        request_id: str | None = None,
    ) -> BulkResult:
        """Queue again what the subscription missed since `since` (Svix's recover).

        Every event since then that the subscription should have received (its client's
        events, or every client's for an admin's subscription, matching its current events
        and models filters, created while it existed) whose delivery failed, is dead or was
        never made is queued: failed and dead ones become pending now, missing ones get a
        new delivery; the webhook-id is the event id as always. At most BULK_LIMIT per call.
        A disabled subscription's recovered deliveries wait until it is re-enabled.
        """
        async with self.store.transaction() as db:
            row = await db.fetchrow(
                "recover_subscription",
                id=subscription_id,
                scope=client.scope,
                since=since,
                limit=self.bulk_limit,
            )
            assert row is not None
            if not row["found"]:
                raise NotFound("subscription")
            if row["queued"]:
                await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.SUBSCRIPTION_RECOVERED,
                "subscription",
                subscription_id,
                {"since": since.isoformat(), "queued": row["queued"], "more": row["more"]},
            )
        log.info(
            "subscription_recovered",
            subscription_id=subscription_id,
            queued=row["queued"],
            more=row["more"],
        )
        return BulkResult(row["queued"], row["more"])

    async def send_test_event(self, client: Client, subscription_id: str) -> dict[str, Any]:
        """Queue a signed `webhook.test` event for this subscription only; returns its delivery.

        The event is not a task event: it has no task, goes to no other subscriber and is
        not in the event feed. 409 when the subscription is disabled.
        """
        subscription = await self.get_subscription(client, subscription_id)
        if not subscription["enabled"]:
            raise Conflict(
                "the subscription is disabled; re-enable it first", "subscription-disabled"
            )
        event_id = new_id("evt")
        now = datetime.fromtimestamp(self.clock(), UTC)
        async with self.store.transaction() as db:
            event = await db.fetchrow(
                "insert_test_event",
                id=event_id,
                client_id=subscription["client_id"],
                type=TEST_EVENT_TYPE,
                payload=subscription_test_body(event_id, TEST_EVENT_TYPE, now, subscription_id),
            )
            assert event is not None
            delivery_id = await db.fetchval(
                "insert_test_delivery",
                event_id=event_id,
                event_seq=event["seq"],
                task_created_at=event["task_created_at"],
                client_id=subscription["client_id"],
                subscription_id=subscription_id,
                url=subscription["url"],
            )
            await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
        log.info("subscription_test_event", subscription_id=subscription_id, event_id=event_id)
        return await self.get_delivery(client, delivery_id)

    async def retry_deliveries(
        self, client: Client, which: DeliveryFilter, *, request_id: str | None = None
    ) -> BulkResult:
        """Bulk redelivery: failed or dead deliveries matching the filter are due now.

        Skips deliveries in flight and those whose subscription is deleted or disabled (as
        the single retry refuses them). At most BULK_LIMIT per call; `more` when others
        remain, so calling again continues (what was queued is pending, no longer matched).
        """
        async with self.store.transaction() as db:
            row = await db.fetchrow(
                "retry_deliveries",
                scope=client.scope,
                status=which.status,
                subscription_id=which.subscription_id,
                task_id=which.task_id,
                since=which.since,
                limit=self.bulk_limit,
            )
            assert row is not None
            if row["queued"]:
                await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.DELIVERIES_BULK_RETRIED,
                "delivery",
                None,
                {
                    "filter": {
                        "subscription_id": which.subscription_id,
                        "status": which.status,
                        "task_id": which.task_id,
                        "since": which.since.isoformat() if which.since else None,
                    },
                    "queued": row["queued"],
                    "more": row["more"],
                },
            )
        log.info("deliveries_retry_requested", queued=row["queued"], more=row["more"])
        return BulkResult(row["queued"], row["more"])
