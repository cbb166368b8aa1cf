"""RelayClient: the synchronous client (httpx.Client underneath)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from mindvideo_relay import _core
from mindvideo_relay._core import Call, FeedBuffer, RetryPolicy, Settings
from mindvideo_relay.models import (
    Delivery,
    Event,
    HistoryEntry,
    Page,
    SubmittedTask,
    Subscription,
    Task,
)

T = TypeVar("T")


class EventFeed(Iterator[Event]):
    """The event feed, oldest first, following `next_cursor` until nothing follows yet.

    `resume_after` is what to pass as `after=` to continue where this feed stopped: the id of
    the last event handed out (or the starting point when none was). Store it with your
    progress and a restarted consumer misses nothing and repeats nothing.
    """

    def __init__(self, fetch: Callable[[str | None], Page[Event]], after: str | None) -> None:
        self._fetch = fetch
        self._buffer: FeedBuffer[Event] = FeedBuffer(after)
        self.resume_after = after

    def __iter__(self) -> EventFeed:
        return self

    def __next__(self) -> Event:
        while self._buffer.needs_page():
            self._buffer.add(self._fetch(self._buffer.cursor))
        event = self._buffer.take()
        if event is None:
            raise StopIteration
        self.resume_after = event.id
        return event


class RelayClient:
    """A synchronous client of the relay's API.

    `base_url` is the relay's address (`http://relay.internal:8080`), `api_key` a client key
    (`rk_...`). Requests that are safe to repeat (reads, PATCH, and `submit`, which always
    carries an Idempotency-Key) are retried on connection errors, 429 and 5xx with bounded,
    jittered exponential backoff that honours Retry-After; `max_retries=0` turns that off.
    Error answers raise RelayError subclasses. Use it as a context manager, or call close().
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = _core.DEFAULT_MAX_RETRIES,
        user_agent: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = Settings(base_url, api_key, user_agent or _core.USER_AGENT)
        self._retry = RetryPolicy(max_retries=max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=_core.timeout_of(timeout))

    def close(self) -> None:
        """Close the connection pool (unless an http_client was passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        """Send a call, retrying as the policy allows; the call's result or its error."""
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    self._settings.url(call.path),
                    params=call.params,
                    json=call.json,
                    headers=self._settings.headers(call),
                )
            except httpx.TransportError as exc:
                delay = self._retry.after_error(call, attempt)
                if delay is None:
                    raise _core.connection_error(exc, call) from exc
            else:
                delay = self._retry.after_answer(call, attempt, response)
                if delay is None:
                    return call.read(response)
            time.sleep(delay)
            attempt += 1

    def _pages(self, page: Callable[[str | None], Page[T]], cursor: str | None) -> Iterator[T]:
        buffer: FeedBuffer[T] = FeedBuffer(cursor)
        while True:
            while buffer.needs_page():
                buffer.add(page(buffer.cursor))
            item = buffer.take()
            if item is None:
                return
            yield item

    # Tasks

    def submit(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        webhook_events: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> SubmittedTask:
        """Submit a task. A random Idempotency-Key is used when none is given; retries reuse it.

        The result carries the key (`idempotency_key`) and `replayed`: True when the relay
        answered with the task an earlier request with this key created.
        """
        return self._send(
            _core.submit_call(
                model,
                input,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    def get_task(self, task_id: str) -> Task:
        """One task."""
        return self._send(_core.get_task_call(task_id))

    def cancel_task(self, task_id: str) -> Task:
        """Ask upstream to cancel a task (Conflict when it is terminal); the task as it stands."""
        return self._send(_core.cancel_task_call(task_id))

    def task_history(self, task_id: str) -> list[HistoryEntry]:
        """A task's audit history, oldest first."""
        return self._send(_core.task_history_call(task_id))

    def task_deliveries(self, task_id: str) -> list[Delivery]:
        """Every webhook delivery of a task, with its attempts."""
        return self._send(_core.task_deliveries_call(task_id))

    def list_tasks_page(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Task]:
        """One page of tasks, newest first (pass its next_cursor as `cursor` for the next)."""
        return self._send(
            _core.tasks_page_call(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        )

    def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
    ) -> Iterator[Task]:
        """Every matching task, newest first, fetching pages of `limit` as the loop goes."""
        return self._pages(
            lambda cursor: self.list_tasks_page(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            ),
            None,
        )

    # Subscriptions

    def create_subscription(
        self,
        url: str,
        *,
        events: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        description: str | None = None,
    ) -> Subscription:
        """Create a subscription; the result's `secret` is shown now and on rotation only."""
        return self._send(
            _core.create_subscription_call(
                url, events=events, models=models, description=description
            )
        )

    def get_subscription(self, subscription_id: str) -> Subscription:
        """One subscription (without its secret)."""
        return self._send(_core.get_subscription_call(subscription_id))

    def list_subscriptions_page(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Subscription]:
        """One page of subscriptions, newest first."""
        return self._send(_core.subscriptions_page_call(limit=limit, cursor=cursor))

    def list_subscriptions(self, *, limit: int | None = None) -> Iterator[Subscription]:
        """Every subscription, newest first."""
        return self._pages(
            lambda cursor: self.list_subscriptions_page(limit=limit, cursor=cursor), None
        )

    def update_subscription(
        self,
        subscription_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Subscription:
        """Change a subscription; arguments left as None stay as they are."""
        changes = _core.subscription_changes(
            url=url, events=events, models=models, description=description, enabled=enabled
        )
        return self._send(_core.update_subscription_call(subscription_id, changes))

    def delete_subscription(self, subscription_id: str) -> None:
        """Delete a subscription (its waiting deliveries become dead)."""
        self._send(_core.delete_subscription_call(subscription_id))

    def rotate_secret(self, subscription_id: str) -> Subscription:
        """A new signing secret (in `secret`); old and new both sign for the overlap window."""
        return self._send(_core.rotate_secret_call(subscription_id))

    # Deliveries

    def list_deliveries_page(
        self,
        *,
        status: str | None = None,
        subscription_id: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        """One page of deliveries, newest first."""
        return self._send(
            _core.deliveries_page_call(
                status=status,
                subscription_id=subscription_id,
                task_id=task_id,
                limit=limit,
                cursor=cursor,
            )
        )

    def list_deliveries(
        self,
        *,
        status: str | None = None,
        subscription_id: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Delivery]:
        """Every matching delivery, newest first."""
        return self._pages(
            lambda cursor: self.list_deliveries_page(
                status=status,
                subscription_id=subscription_id,
                task_id=task_id,
                limit=limit,
                cursor=cursor,
            ),
            None,
        )

    def get_delivery(self, delivery_id: str) -> Delivery:
        """One delivery with its attempts."""
        return self._send(_core.get_delivery_call(delivery_id))

    def retry_delivery(self, delivery_id: str) -> Delivery:
        """Send a failed or dead delivery again (same webhook-id)."""
        return self._send(_core.retry_delivery_call(delivery_id))

    # The event feed

    def events_page(
        self,
        *,
        after: str | None = None,
        types: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> Page[Event]:
        """One page of the event feed after a cursor or an event id, oldest first."""
        return self._send(_core.events_page_call(after=after, types=types, limit=limit))

    def events(
        self,
        *,
        after: str | None = None,
        types: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> EventFeed:
        """Every event after `after` (a cursor or an event id; None: from the start), oldest first.

        Stops when nothing follows yet; the feed's `resume_after` continues from there later.
        """
        wanted = list(types) if types is not None else None
        return EventFeed(
            lambda cursor: self.events_page(after=cursor, types=wanted, limit=limit), after
        )
