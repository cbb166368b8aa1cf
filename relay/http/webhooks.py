"""Subscription, delivery and event-feed routes: parse, call WebhookService, shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.core.config import split_commas
from relay.core.errors import FieldError, InvalidRequest
from relay.core.payloads import delivery_json, subscription_json
from relay.core.vocabulary import EVENT_TYPES, DeliveryStatus
from relay.delivery.redelivery import DeliveryFilter
from relay.delivery.subscriptions import NewSubscription
from relay.http.common import json_response, read_body, read_query
from relay.http.openapi import documented
from relay.http.schemas import (
    BulkQueued,
    Delivery,
    DeliveryPage,
    DeliveryRetryFilter,
    EventPage,
    Subscription,
    SubscriptionCreate,
    SubscriptionPage,
    SubscriptionRecover,
    SubscriptionUpdate,
)
from relay.intake.validation import repeated_entries
from relay.keys import CATALOG, CLIENT, REQUEST_ID, WEBHOOKS

routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)

# Ids are short; a bound keeps junk cursors out of the queries.
_CURSOR_MAX = 100


# Ids and filters holding U+0000 (which Postgres text cannot store) never reach these
# handlers: the `problems` middleware answers them with 404 (path) or 422 (query) first.


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscriptionListQuery(_Query):
    """`GET /v1/subscriptions` query parameters."""

    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=_CURSOR_MAX)


class DeliveryListQuery(_Query):
    """`GET /v1/deliveries` query parameters."""

    status: DeliveryStatus | None = None
    subscription_id: str | None = Field(None, max_length=_CURSOR_MAX)
    task_id: str | None = Field(None, max_length=_CURSOR_MAX)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=_CURSOR_MAX)


class EventFeedQuery(_Query):
    """`GET /v1/events` query parameters."""

    after: str | None = Field(
        None,
        max_length=_CURSOR_MAX,
        description="a next_cursor from an earlier page, or the id (evt_...) of an event",
    )
    types: str | None = Field(
        None, max_length=500, description="comma-separated event types, e.g. task.succeeded"
    )
    limit: int = Field(50, ge=1, le=200)

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: str | None) -> str | None:
        for part in split_commas(value or ""):
            if part not in EVENT_TYPES:
                raise ValueError(f"unknown event type {part!r}; one of: {', '.join(EVENT_TYPES)}")
        return value

    @property
    def type_list(self) -> list[str] | None:
        """The requested event types (None: all)."""
        return split_commas(self.types or "") or None


def _subscription_errors(request: web.Request) -> Callable[[Mapping[str, Any]], list[FieldError]]:
    """Checks of a subscription body beyond its shape: no repeated entries, known models."""
    catalog = request.app[CATALOG]

    def check(body: Mapping[str, Any]) -> list[FieldError]:
        errors = []
        events, models = body.get("events"), body.get("models")
        if isinstance(events, list):
            errors += repeated_entries(events, "/events")
        if isinstance(models, list):
            known = ", ".join(catalog.names)
            errors += [
                FieldError(f"/models/{index}", f"unknown model {model!r}; known models: {known}")
                for index, model in enumerate(models)
                if isinstance(model, str) and not catalog.accepts(model)
            ]
            errors += repeated_entries(models, "/models")
        return errors

    return check


async def _read_subscription(request: web.Request, model: type[M]) -> M:
    """A subscription body: its shape and its entries checked, every mistake in one 422."""
    check = _subscription_errors(request)
    body = await read_body(request, model, also=check)
    errors = check(body.model_dump(exclude_unset=True))
    if errors:
        raise InvalidRequest("the request is invalid", errors)
    return body


class TaskDeliveryList(BaseModel):
    """`GET /v1/tasks/{id}/deliveries`: every delivery of the task, with attempts."""

    data: list[Delivery]


# Subscriptions


@routes.post("/v1/subscriptions")
@documented(
    "Create a subscription (its secret is shown now and on rotation only)",
    {201: Subscription},
    body=SubscriptionCreate,
)
async def create_subscription(request: web.Request) -> web.Response:
    """Create a subscription: 201 with its `secret` (shown only now and on rotation)."""
    body = await _read_subscription(request, SubscriptionCreate)
    new = NewSubscription(
        url=str(body.url),
        events=list(body.events) if body.events else None,
        models=body.models,
        description=body.description,
    )
    row, secret = await request.app[WEBHOOKS].create_subscription(
        request[CLIENT], new, request_id=request.get(REQUEST_ID)
    )
    response = json_response(subscription_json(row, secret=secret), status=201)
    response.headers["Location"] = f"/v1/subscriptions/{row['id']}"
    return response


@routes.get("/v1/subscriptions")
@documented(
    "List subscriptions, newest first", {200: SubscriptionPage}, query=SubscriptionListQuery
)
async def list_subscriptions(request: web.Request) -> web.Response:
    """Subscriptions newest first, keyset-paginated."""
    query = read_query(request, SubscriptionListQuery)
    page, next_cursor = await request.app[WEBHOOKS].list_subscriptions(
        request[CLIENT], cursor=query.cursor, limit=query.limit
    )
    return json_response({"data": [subscription_json(r) for r in page], "next_cursor": next_cursor})


@routes.get("/v1/subscriptions/{subscription_id}")
@documented("Get a subscription", {200: Subscription}, errors=(404,))
async def get_subscription(request: web.Request) -> web.Response:
    """One subscription (without its secret)."""
    row = await request.app[WEBHOOKS].get_subscription(
        request[CLIENT], request.match_info["subscription_id"]
    )
    return json_response(subscription_json(row))


@routes.patch("/v1/subscriptions/{subscription_id}")
@documented(
    "Change a subscription (omitted fields stay)",
    {200: Subscription},
    body=SubscriptionUpdate,
    errors=(404,),
)
async def update_subscription(request: web.Request) -> web.Response:
    """Change url, events, models, description or enabled; omitted fields stay."""
    body = await _read_subscription(request, SubscriptionUpdate)
    changes = body.model_dump(exclude_unset=True)
    if body.url is not None:
        changes["url"] = str(body.url)
    row = await request.app[WEBHOOKS].update_subscription(
        request[CLIENT],
        request.match_info["subscription_id"],
        changes,
        request_id=request.get(REQUEST_ID),
    )
    return json_response(subscription_json(row))


@routes.delete("/v1/subscriptions/{subscription_id}")
@documented("Delete a subscription", {204: None}, errors=(404,))
async def delete_subscription(request: web.Request) -> web.Response:
    """Delete a subscription: 204."""
    await request.app[WEBHOOKS].delete_subscription(
        request[CLIENT], request.match_info["subscription_id"], request_id=request.get(REQUEST_ID)
    )
    return web.Response(status=204)


@routes.post("/v1/subscriptions/{subscription_id}/rotate-secret")
@documented("Rotate the signing secret (both sign for 24 h)", {200: Subscription}, errors=(404,))
async def rotate_subscription_secret(request: web.Request) -> web.Response:
    """A new secret; for the overlap window deliveries carry both signatures."""
    row, secret = await request.app[WEBHOOKS].rotate_secret(
        request[CLIENT], request.match_info["subscription_id"], request_id=request.get(REQUEST_ID)
    )
    return json_response(subscription_json(row, secret=secret))


@routes.post("/v1/subscriptions/{subscription_id}/recover")
@documented(
    "Queue again every event since a time that the subscription missed "
    "(failed, dead or never queued); at most 10,000 per call",
    {202: BulkQueued},
    body=SubscriptionRecover,
    errors=(404,),
)
async def recover_subscription(request: web.Request) -> web.Response:
    """Svix's recover: 202 with how many deliveries were queued and whether more remain."""
    body = await read_body(request, SubscriptionRecover)
    result = await request.app[WEBHOOKS].recover(
        request[CLIENT],
        request.match_info["subscription_id"],
        body.since,
        request_id=request.get(REQUEST_ID),
    )
    return json_response({"queued": result.queued, "more": result.more}, status=202)


@routes.post("/v1/subscriptions/{subscription_id}/test")
@documented(
    "Send a signed webhook.test event to this subscription only (not a task event; not in "
    "the event feed); answers with its delivery",
    {202: Delivery},
    errors=(404, 409),
)
async def send_test_event(request: web.Request) -> web.Response:
    """Queue a `webhook.test` event for the subscription: 202 with its delivery."""
    row = await request.app[WEBHOOKS].send_test_event(
        request[CLIENT], request.match_info["subscription_id"]
    )
    response = json_response(delivery_json(row), status=202)
    response.headers["Location"] = f"/v1/deliveries/{row['id']}"
    return response


# Deliveries


@routes.post("/v1/deliveries/retry")
@documented(
    "Send failed or dead deliveries matching a filter again (same webhook-ids); at most "
    "10,000 per call",
    {202: BulkQueued},
    body=DeliveryRetryFilter,
)
async def retry_deliveries(request: web.Request) -> web.Response:
    """Bulk redelivery: 202 with how many were queued and whether more match."""
    body = await read_body(request, DeliveryRetryFilter)
    result = await request.app[WEBHOOKS].retry_deliveries(
        request[CLIENT],
        DeliveryFilter(
            subscription_id=body.subscription_id,
            status=body.status,
            since=body.since,
            task_id=body.task_id,
        ),
        request_id=request.get(REQUEST_ID),
    )
    return json_response({"queued": result.queued, "more": result.more}, status=202)


@routes.get("/v1/deliveries")
@documented("List deliveries, newest first", {200: DeliveryPage}, query=DeliveryListQuery)
async def list_deliveries(request: web.Request) -> web.Response:
    """Deliveries newest first, filtered by status, subscription and task."""
    query = read_query(request, DeliveryListQuery)
    page, next_cursor = await request.app[WEBHOOKS].list_deliveries(
        request[CLIENT],
        status=query.status,
        subscription_id=query.subscription_id,
        task_id=query.task_id,
        cursor=query.cursor,
        limit=query.limit,
    )
    return json_response({"data": [delivery_json(r) for r in page], "next_cursor": next_cursor})


@routes.get("/v1/deliveries/{delivery_id}")
@documented("Get a delivery with its attempts", {200: Delivery}, errors=(404,))
async def get_delivery(request: web.Request) -> web.Response:
    """One delivery with its attempts."""
    row = await request.app[WEBHOOKS].get_delivery(
        request[CLIENT], request.match_info["delivery_id"]
    )
    return json_response(delivery_json(row))


@routes.post("/v1/deliveries/{delivery_id}/retry")
@documented(
    "Send a failed or dead delivery again (same webhook-id)",
    {202: Delivery},
    errors=(404, 409),
)
async def retry_delivery(request: web.Request) -> web.Response:
    """Send a failed or dead delivery again (same webhook-id): 202 with the delivery."""
    row = await request.app[WEBHOOKS].retry_delivery(
        request[CLIENT], request.match_info["delivery_id"], request_id=request.get(REQUEST_ID)
    )
    return json_response(delivery_json(row), status=202)


@routes.get("/v1/tasks/{task_id}/deliveries")
@documented(
    "Every webhook delivery of a task, with attempts", {200: TaskDeliveryList}, errors=(404,)
)
async def task_deliveries(request: web.Request) -> web.Response:
    """Every delivery of a task, in event order, with attempts."""
    rows = await request.app[WEBHOOKS].task_deliveries(
        request[CLIENT], request.match_info["task_id"]
    )
    return json_response({"data": [delivery_json(r) for r in rows]})


# The event feed


@routes.get("/v1/events")
@documented(
    "Webhook events oldest first, to catch up without webhooks",
    {200: EventPage},
    query=EventFeedQuery,
)
async def list_events(request: web.Request) -> web.Response:
    """Webhook bodies oldest first, after a cursor or an event id: catch-up without webhooks."""
    query = read_query(request, EventFeedQuery)
    events, next_cursor = await request.app[WEBHOOKS].list_events(
        request[CLIENT], after=query.after, types=query.type_list, limit=query.limit
    )
    return json_response({"data": events, "next_cursor": next_cursor})
