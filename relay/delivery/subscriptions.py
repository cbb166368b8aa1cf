"""Subscriptions, deliveries and the event feed: the domain service behind their routes.

Recovery, bulk retries and test events live in `relay.delivery.redelivery`, the event feed in
`relay.delivery.feed`; both are mixed into `WebhookService`, the one service the routes call.

A client sees its own subscriptions, deliveries and events; an admin (scope None) sees
everyone's. Another client's id answers NotFound, exactly like an id that does not exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from relay.audit import action_log as actions
from relay.audit.action_log import Actor, record_action
from relay.core.egress import Network, literal_ip_denied
from relay.core.errors import Conflict, FieldError, InvalidRequest, NotFound
from relay.core.ids import new_id
from relay.core.pagination import id_cursor, keyset_page
from relay.core.payloads import iso
from relay.core.store import OUTBOX_CHANNEL, Store
from relay.delivery.feed import EventFeed
from relay.delivery.redelivery import BULK_LIMIT, Redelivery
from relay.identity.clients import Client, new_signing_secret

log = structlog.get_logger(__name__)

# PATCH fields where an explicit null is a value ("all", "none"), so the query must be told
# whether each was given at all.
_NULLABLE_FIELDS = ("events", "models", "description")


@dataclass(frozen=True)
class NewSubscription:
    """A validated `POST /v1/subscriptions` body (None: every event type / every model)."""

    url: str
    events: list[str] | None = None
    models: list[str] | None = None
    description: str | None = None


class WebhookService(Redelivery, EventFeed):
    """Every subscription/delivery/event-feed operation of the API."""

    def __init__(
        self,
        store: Store,
        *,
        webhook_deny_cidrs: Sequence[Network] = (),
        secret_rotation_overlap_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.webhook_deny_cidrs = webhook_deny_cidrs
        self.secret_rotation_overlap_s = secret_rotation_overlap_s
        self.clock = clock
        # Per-call bound of recover and bulk retry (an attribute so tests can lower it).
        self.bulk_limit = BULK_LIMIT

    def _check_url(self, url: str) -> None:
        # The dispatcher checks resolved addresses at send time; refusing an obviously
        # denied literal address now gives the caller a clear 422 instead of a dead delivery.
        denied = literal_ip_denied(url, self.webhook_deny_cidrs)
        if denied is not None:
            raise InvalidRequest("the webhook URL may not be called", [FieldError("/url", denied)])

    # Subscriptions

    async def create_subscription(
        self, client: Client, new: NewSubscription, *, request_id: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Create a subscription; returns (row, secret): the secret is shown now only."""
        self._check_url(new.url)
        secret = new_signing_secret()
        async with self.store.transaction() as db:
            row = await db.fetchrow(
                "insert_subscription",
                id=new_id("sub"),
                client_id=client.id,
                url=new.url,
                events=new.events,
                models=new.models,
                description=new.description,
                secret=secret,
            )
            assert row is not None
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.SUBSCRIPTION_CREATED,
                "subscription",
                row["id"],
                {"url": new.url, "events": new.events, "models": new.models},
            )
        log.info("subscription_created", subscription_id=row["id"])
        return dict(row), secret

    async def list_subscriptions(
        self, client: Client, *, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of subscriptions, newest first, and the next cursor (or None)."""
        rows = await self.store.fetch(
            "list_subscriptions",
            scope=client.scope,
            cursor=id_cursor(cursor, "sub"),
            limit=limit + 1,
        )
        return keyset_page(rows, limit)

    async def get_subscription(self, client: Client, subscription_id: str) -> dict[str, Any]:
        """One subscription the client may see, or NotFound."""
        row = await self.store.fetchrow("get_subscription", id=subscription_id, scope=client.scope)
        if row is None:
            raise NotFound("subscription")
        return dict(row)

    async def update_subscription(
        self,
        client: Client,
        subscription_id: str,
        changes: Mapping[str, Any],
        *,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """PATCH: change only the fields present in `changes`.

        `events`/`models` set to None mean "all again"; `enabled: true` re-enables a
        disabled subscription and the deliveries that waited for it are due at once;
        `enabled: false` parks its waiting deliveries (new events keep being queued for it).
        """
        if changes.get("url") is not None:
            self._check_url(changes["url"])
        given = {name: name in changes for name in _NULLABLE_FIELDS}
        async with self.store.transaction() as db:
            row = await db.fetchrow(
                "update_subscription",
                id=subscription_id,
                scope=client.scope,
                url=changes.get("url"),
                events=changes.get("events"),
                models=changes.get("models"),
                description=changes.get("description"),
                enabled=changes.get("enabled"),
                events_given=given["events"],
                models_given=given["models"],
                description_given=given["description"],
            )
            if row is None:
                raise NotFound("subscription")
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.SUBSCRIPTION_UPDATED,
                "subscription",
                subscription_id,
                {"changes": dict(changes)},
            )
            if changes.get("enabled"):
                await db.execute("resume_subscription_deliveries", id=subscription_id)
                await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
            elif changes.get("enabled") is False:
                await db.execute("park_subscription_deliveries", ids=[subscription_id])
        log.info("subscription_updated", subscription_id=subscription_id, fields=sorted(changes))
        return dict(row)

    async def delete_subscription(
        self, client: Client, subscription_id: str, *, request_id: str | None = None
    ) -> None:
        """Delete a subscription; deliveries still waiting for it are marked dead."""
        async with self.store.transaction() as db:
            if (
                await db.fetchrow("delete_subscription", id=subscription_id, scope=client.scope)
                is None
            ):
                raise NotFound("subscription")
            await db.execute("abandon_subscription_deliveries", subscription_id=subscription_id)
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.SUBSCRIPTION_DELETED,
                "subscription",
                subscription_id,
            )
        log.info("subscription_deleted", subscription_id=subscription_id)

    async def rotate_secret(
        self, client: Client, subscription_id: str, *, request_id: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """A new secret; the old one keeps signing too for `secret_rotation_overlap_s`."""
        secret = new_signing_secret()
        old_valid_until = datetime.fromtimestamp(self.clock(), UTC) + timedelta(
            seconds=self.secret_rotation_overlap_s
        )
        async with self.store.transaction() as db:
            row = await db.fetchrow(
                "rotate_subscription_secret",
                id=subscription_id,
                scope=client.scope,
                secret=secret,
                previous_secret_until=old_valid_until,
            )
            if row is None:
                raise NotFound("subscription")
            # Never the secrets themselves: only until when the old one still signs.
            await record_action(
                db,
                Actor.of(client, request_id),
                actions.SUBSCRIPTION_SECRET_ROTATED,
                "subscription",
                subscription_id,
                {"previous_secret_until": iso(old_valid_until)},
            )
        log.info("subscription_secret_rotated", subscription_id=subscription_id)
        return dict(row), secret

    # Deliveries

    async def list_deliveries(
        self,
        client: Client,
        *,
        status: str | None,
        subscription_id: str | None,
        task_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of deliveries, newest first, and the next cursor (or None)."""
        rows = await self.store.fetch(
            "list_deliveries",
            scope=client.scope,
            status=status,
            subscription_id=subscription_id,
            task_id=task_id,
            cursor=id_cursor(cursor, "dlv"),
            limit=limit + 1,
        )
        return keyset_page(rows, limit)

    async def get_delivery(self, client: Client, delivery_id: str) -> dict[str, Any]:
        """One delivery with its attempts, or NotFound."""
        row = await self.store.fetchrow("get_delivery", id=delivery_id, scope=client.scope)
        if row is None:
            raise NotFound("delivery")
        return (await self._with_attempts([row]))[0]

    async def task_deliveries(self, client: Client, task_id: str) -> list[dict[str, Any]]:
        """Every delivery of a task the client may see, in event order, with attempts."""
        if await self.store.fetchrow("get_task", id=task_id, scope=client.scope) is None:
            raise NotFound("task")
        rows = await self.store.fetch("task_deliveries", task_id=task_id, scope=client.scope)
        return await self._with_attempts(rows)

    async def _with_attempts(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        attempts: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        for a in await self.store.fetch("delivery_attempts", delivery_ids=list(attempts)):
            attempts[a["delivery_id"]].append(
                {
                    "attempt": a["attempt"],
                    "status_code": a["status_code"],
                    "response_excerpt": a["response_excerpt"],
                    "error": a["error"],
                    "latency_ms": a["latency_ms"],
                    "started_at": iso(a["started_at"]),
                }
            )
        return [{**dict(row), "attempts": attempts[row["id"]]} for row in rows]

    async def retry_delivery(
        self, client: Client, delivery_id: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Send a failed or dead delivery again now, with the same webhook-id.

        409 when it is pending or already succeeded, in flight, or its subscription was
        deleted or is disabled (re-enable it first).
        """
        row = await self.store.fetchrow("get_delivery", id=delivery_id, scope=client.scope)
        if row is None:
            raise NotFound("delivery")
        if row["subscription_id"] is not None and not row["subscription_active"]:
            raise Conflict("the delivery's subscription was deleted", "subscription-deleted")
        if not row["subscription_enabled"]:
            raise Conflict(
                "the delivery's subscription is disabled; re-enable it first",
                "subscription-disabled",
            )
        async with self.store.transaction() as db:
            retried = await db.fetchrow("retry_delivery", id=delivery_id, scope=client.scope)
            if retried is not None:
                await record_action(
                    db,
                    Actor.of(client, request_id),
                    actions.DELIVERY_RETRIED,
                    "delivery",
                    delivery_id,
                    {"task_id": row["task_id"], "previous_status": row["status"]},
                )
                await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
        if retried is None:
            raise Conflict(
                f"only a failed or dead delivery not being attempted right now can be retried "
                f"(this one is {row['status']})",
                "delivery-not-retryable",
            )
        log.info("delivery_retry_requested", delivery_id=delivery_id)
        return await self.get_delivery(client, delivery_id)
