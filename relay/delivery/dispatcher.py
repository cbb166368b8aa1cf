"""Delivers signed webhooks from the outbox: claim a batch, send it, record every attempt.

A delivery is leased by setting `leased_until` to now + lease and `lease_owner` to this
dispatcher (no index covers either, so the claim is a HOT update; see 0013); the HTTP call
happens outside any transaction; the outcome changes only rows whose lease is still ours
(the attempt itself is history either way). A dispatcher that dies therefore leaves its
deliveries to whoever claims them after the lease, with the same webhook-id.

Dispatchers sleep on LISTEN relay_outbox (a dedicated connection, reconnected with
backoff) and poll every `dispatch_idle_poll_s` as a backstop for missed notifications.
Where a webhook may go is `relay.core.egress`; what happens after an attempt is
`relay.delivery.policy`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from relay.core import metrics, tracing
from relay.core.config import Settings, settings_subset
from relay.core.egress import Network, literal_ip_denied
from relay.core.loops import Loop, new_owner_id
from relay.core.retry_after import parse_retry_after
from relay.core.store import OUTBOX_CHANNEL, Db, Store
from relay.delivery.policy import (
    RESPONSE_READ_LIMIT,
    RETRY_AFTER_STATUSES,
    AttemptResult,
    attempt_error_text,
    plan_next_step,
    read_bounded,
    response_excerpt,
    status_error_text,
)
from relay.delivery.signing import webhook_headers

log = structlog.get_logger(__name__)

# The most attempt outcomes one `complete_deliveries` statement writes. Outcomes are
# written by one recorder per dispatcher, a statement at a time: what finished while the
# previous statement ran is the next batch (group commit without waiting for a batch to
# fill), so a burst shares a handful of commits and a lone delivery is written at once.
MAX_RECORD_BATCH = 256
# LISTEN reconnect backoff: quick first retry (a database restart is usually brief), capped
# so a long outage costs one connection attempt every half minute.
LISTEN_RETRY_MIN_S = 0.2
LISTEN_RETRY_MAX_S = 30.0
# URLs whose deny-list verdict is remembered: far more than the targets a process sees at
# once, small enough to forget: the same bound as relay.core.egress's shared cache.
DENY_CACHE_SIZE = 4096


@dataclass(frozen=True)
class DispatcherSettings:
    """The settings the dispatcher reads (named as in `Settings`)."""

    dispatch_idle_poll_s: float
    dispatch_batch_size: int
    dispatch_concurrency: int
    dispatch_per_target_concurrency: int
    dispatch_lease_s: float
    webhook_timeout_s: float
    webhook_retry_schedule: Sequence[float]
    webhook_deny_cidrs: Sequence[Network]
    webhook_disable_after_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherSettings:
        """Pick this loop's values out of the process settings."""
        return settings_subset(cls, settings)


def _duration_text(seconds: float) -> str:
    """`5 days`, `2 hours`, `90s`: the disable threshold as the reason states it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g}s"


class Dispatcher(Loop):
    """Claims due deliveries, sends them, records the outcome.

    Concurrency is bounded at claim time: at most `dispatch_concurrency` deliveries in
    flight in this process and at most `dispatch_per_target_concurrency` per target
    (subscriber), so every claimed delivery starts at once and none waits out its lease.
    A pass claims a batch and starts sending it without waiting, so `run()` keeps claiming
    while earlier batches are still in flight and a slow receiver never holds up the others;
    `run_once()` is the same pass with its batch awaited to the end (for tests).
    """

    name = "dispatcher"

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        settings: DispatcherSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings.dispatch_idle_poll_s)
        self.store = store
        self.session = session
        self.settings = settings
        self.clock = clock
        self.owner = new_owner_id("dispatcher")
        self._in_flight: dict[str, int] = {}
        # Built once, not per attempt: the per-attempt cost is what bounds throughput.
        self._deny = tuple(settings.webhook_deny_cidrs)
        self._denied: dict[str, str | None] = {}
        self._timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
        # Finished attempts waiting for the recorder, each with the future its sender awaits.
        self._finished: list[tuple[Mapping[str, Any], AttemptResult, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Deliveries claimed by this dispatcher and not recorded yet."""
        return sum(self._in_flight.values())

    async def claim_due(self) -> list[Mapping[str, Any]]:
        """Lease the next due deliveries this dispatcher has room for (none: empty list)."""
        room = min(self.settings.dispatch_batch_size, self.settings.dispatch_concurrency)
        room -= self.in_flight
        if room <= 0:
            return []
        rows = await self.store.fetch(
            "claim_due_deliveries",
            owner=self.owner,
            batch_size=room,
            lease_s=self.settings.dispatch_lease_s,
            now=datetime.fromtimestamp(self.clock(), UTC),
            per_target_limit=self.settings.dispatch_per_target_concurrency,
            in_flight={target: n for target, n in self._in_flight.items() if n},
        )
        for row in rows:
            self._in_flight[row["target"]] = self._in_flight.get(row["target"], 0) + 1
        return rows

    async def deliver(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Send a claimed batch concurrently; returns when every outcome is recorded.

        Each finished attempt is handed to the dispatcher's recorder, which writes the
        outcomes of every batch in flight together (`_record_finished`): a slow attempt does
        not hold back the recording of the fast ones, and concurrent batches share commits.
        """

        async def attempt(row: Mapping[str, Any]) -> None:
            result: AttemptResult | None = None
            try:
                result = await self._attempt(row)
            except Exception:
                # A bug, not a receiver problem: the lease expires and it is retried.
                log.exception("webhook_attempt_crashed", delivery_id=row["id"])
            finally:
                # The send is over: free its slot now. The row stays leased and pending
                # until recorded, so neither a re-claim nor a later event of the same task
                # can overtake it.
                self._done(row)
            if result is not None:
                await self._hand_over(row, result)

        tasks = [asyncio.create_task(attempt(row), name=f"webhook-{row['id']}") for row in batch]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _hand_over(self, row: Mapping[str, Any], result: AttemptResult) -> asyncio.Future[None]:
        """Queue an outcome for the recorder (started if idle); resolved once it is written."""
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished.append((row, result, recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(
                self._record_finished(), name="relay-dispatcher-recorder"
            )
        return recorded

    async def _record_finished(self) -> None:
        """Write what has finished, a statement at a time, until nothing waits."""
        while self._finished:
            batch = self._finished[:MAX_RECORD_BATCH]
            del self._finished[:MAX_RECORD_BATCH]
            try:
                await self._record([(row, result) for row, result, _ in batch])
            except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
                for _, _, recorded in batch + self._finished:
                    recorded.cancel()
                self._finished = []
                raise
            except Exception as exc:
                # The database refused or is gone: these leases run out and are retried.
                for _, _, recorded in batch:
                    if not recorded.done():
                        recorded.set_exception(exc)
            else:
                for _, _, recorded in batch:
                    if not recorded.done():  # its sender may have been cancelled meanwhile
                        recorded.set_result(None)
                # Recorded deliveries no longer hold back their tasks' later events.
                self.wake()

    def _done(self, row: Mapping[str, Any]) -> None:
        target = row["target"]
        left = self._in_flight.get(target, 0) - 1
        if left > 0:
            self._in_flight[target] = left
        else:
            self._in_flight.pop(target, None)
        if self.in_flight <= self.settings.dispatch_concurrency * 3 // 4:
            # Half the room is free: claim the next batch while this one finishes, so the
            # database round trip overlaps sending instead of following it.
            self.wake()

    async def run_pass(self) -> int:
        """Claim what there is room for and start sending it; returns how many were claimed."""
        batch = await self.claim_due()
        if batch:
            self.start_work(self.deliver(batch), name="relay-dispatcher-batch")
        return len(batch)

    async def release(self) -> None:
        """Hand back every delivery still leased to this dispatcher, its attempt uncounted."""
        await self.store.execute("release_delivery_leases", owner=self.owner)

    async def side_task(self) -> None:
        """LISTEN for new outbox rows and wake on each; reconnect with backoff when lost."""
        backoff = LISTEN_RETRY_MIN_S
        while True:
            try:
                async for _ in self.store.listen(OUTBOX_CHANNEL):
                    backoff = LISTEN_RETRY_MIN_S
                    self.wake()
            except Exception as exc:
                log.warning(
                    "outbox_listen_lost", error=type(exc).__name__, retry_in_s=round(backoff, 2)
                )
            # Whatever was committed while nobody listened is picked up by this pass.
            self.wake()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, LISTEN_RETRY_MAX_S)

    @tracing.webhook_attempt
    async def _attempt(self, row: Mapping[str, Any]) -> AttemptResult:
        """One signed POST; never raises for anything the receiver or network does."""
        now = self.clock()
        url = row["url"]
        denied = self._literal_ip_denied(url)
        if denied is not None:
            return AttemptResult(None, None, f"denied: {denied}", 0.0, now)
        # The stored jsonb as Postgres renders it, already bytes: the same on every retry.
        body = row["body"]
        previous = row["previous_secret"]
        secrets = (row["secret"], previous) if previous else (row["secret"],)
        headers = webhook_headers(secrets, row["event_id"], int(now), body)
        headers["Content-Type"] = "application/json"
        traceparent = row["traceparent"]
        if traceparent:  # the submission's trace
            headers.update(tracing.delivery_headers(traceparent))
        started = time.perf_counter()
        try:
            async with self.session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                excerpt = response_excerpt(await read_bounded(response, RESPONSE_READ_LIMIT))
                retry_after = None
                if status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
                return AttemptResult(
                    status,
                    excerpt,
                    status_error_text(status),
                    time.perf_counter() - started,
                    now,
                    retry_after,
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use; all of these are failed attempts.
            return AttemptResult(
                None,
                None,
                attempt_error_text(exc, self.settings.webhook_timeout_s),
                time.perf_counter() - started,
                now,
            )

    def _literal_ip_denied(self, url: str) -> str | None:
        """`literal_ip_denied` for this dispatcher's deny list, remembered per URL.

        Checked on every attempt and targets repeat; a plain dict lookup costs less than
        hashing the deny list's networks for a shared cache. Bounded like that cache.
        """
        try:
            return self._denied[url]
        except KeyError:
            pass
        if len(self._denied) >= DENY_CACHE_SIZE:
            self._denied.clear()
        denied = self._denied[url] = literal_ip_denied(url, self._deny)
        return denied

    async def _record(self, finished: list[tuple[Mapping[str, Any], AttemptResult]]) -> None:
        """Write a group of outcomes: one statement, in a transaction when one may disable.

        `complete_deliveries` records the deliveries, their attempts and the subscriptions'
        health at once. When a subscription's attempt failed, it runs in a transaction
        that also disables the subscription (and parks what waits for it) if it answered
        410 or has failed for `webhook_disable_after_s`: both commit, or neither.
        """
        if not finished:
            return
        schedule = self.settings.webhook_retry_schedule
        steps = []
        gone: list[str] = []
        succeeded: set[str] = set()
        failed: set[str] = set()
        oldest = newest = finished[0][0]["task_created_at"]
        for row, result in finished:
            step = plan_next_step(result, row["retry_index"], schedule)
            steps.append(step)
            subscription_id = row["subscription_id"]
            if subscription_id:
                if step.disable_subscription:
                    gone.append(subscription_id)
                (succeeded if result.succeeded else failed).add(subscription_id)
            created = row["task_created_at"]
            if created < oldest:
                oldest = created
            elif created > newest:
                newest = created

        async def complete(db: Db) -> Mapping[str, Any]:
            written = await db.fetchrow(
                "complete_deliveries",
                owner=self.owner,
                ids=[row["id"] for row, _ in finished],
                task_created_ats=[row["task_created_at"] for row, _ in finished],
                attempts=[row["attempt_count"] for row, _ in finished],
                statuses=[step.status for step in steps],
                status_codes=[result.status_code for _, result in finished],
                response_excerpts=[result.response_excerpt for _, result in finished],
                errors=[result.error for _, result in finished],
                latencies_ms=[round(result.latency_s * 1000, 3) for _, result in finished],
                started_at_s=[result.started_at_s for _, result in finished],
                retry_delays_s=[step.retry_delay_s for step in steps],
                retry_indexes=[step.retry_index for step in steps],
                oldest=oldest,
                newest=newest,
                succeeded=sorted(succeeded),
                failed=sorted(failed),
                disable_after_s=self.settings.webhook_disable_after_s,
            )
            assert written is not None  # an aggregate: always one row
            return written

        disabled: list[Mapping[str, Any]] = []
        failing: list[Mapping[str, Any]] = []
        if failed:
            # A failure may disable its subscription (410, or failing for too long): the
            # outcomes and the disabling commit together, so no crash between them leaves
            # a subscription enabled that its recorded attempts say is gone.
            async with self.store.transaction() as db:
                written = await complete(db)
                if gone or written["overdue"]:
                    disabled, failing = await self._disable(db, gone, succeeded, failed)
        else:  # the common case: every attempt succeeded, one statement
            written = await complete(self.store)
        self._log_disabled(disabled, failing)
        recorded_ids = set(written["recorded"])
        counts: Counter[str] = Counter()
        now = time.time()
        debug = log.is_enabled_for(logging.DEBUG)
        for (row, result), step in zip(finished, steps, strict=True):
            if row["id"] not in recorded_ids:
                # Our lease ran out and another dispatcher owns the delivery now: the
                # attempt is in its history, the delivery's state is the new owner's.
                log.warning(
                    "webhook_lease_lost",
                    delivery_id=row["id"],
                    attempt=row["attempt_count"],
                    status_code=result.status_code,
                )
                continue
            counts[step.status] += 1
            metrics.WEBHOOK_SECONDS.observe(result.latency_s)
            if step.status == "succeeded":
                lag_s = max(now - row["event_created_s"], 0.0)
                metrics.WEBHOOK_LAG.observe(lag_s)
                # Debug: one line per delivery is the costliest part of a delivery at info,
                # and the deliveries API and the metrics already say what succeeded. Even
                # filtered out, a structlog call costs a few µs: asked once per batch.
                if debug:
                    log.debug(
                        "webhook_delivered",
                        delivery_id=row["id"],
                        event_id=row["event_id"],
                        attempt=row["attempt_count"],
                        status_code=result.status_code,
                        latency_ms=round(result.latency_s * 1000, 2),
                        lag_ms=round(lag_s * 1000, 2),
                    )
            else:
                log.info(
                    "webhook_attempt_failed",
                    delivery_id=row["id"],
                    event_id=row["event_id"],
                    attempt=row["attempt_count"],
                    status_code=result.status_code,
                    next_status=step.status,
                    retry_in_s=round(step.retry_delay_s, 3) if step.retry_delay_s else None,
                )
        for status, count in counts.items():
            metrics.WEBHOOK_DELIVERIES.labels(status).inc(count)

    async def _disable(
        self, db: Db, gone: list[str], succeeded: set[str], failed: set[str]
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """Disable subscriptions that answered 410 or have failed too long; park their queue.

        Runs in the caller's transaction; returns (disabled by a 410, disabled as failing).
        """
        disabled: list[Mapping[str, Any]] = []
        if gone:
            disabled = await db.fetch(
                "disable_subscriptions", ids=gone, reason="endpoint answered 410 Gone"
            )
        # A run of failures that has lasted webhook_disable_after_s disables the
        # subscription, as a 410 does (the rest of its health was written with the batch).
        changed = await db.fetch(
            "record_subscription_health",
            succeeded=sorted(succeeded),
            failed=sorted(failed),
            disable_after_s=self.settings.webhook_disable_after_s,
            disable_after_text=_duration_text(self.settings.webhook_disable_after_s),
        )
        failing = [r for r in changed if r["disabled"]]
        if disabled or failing:
            await db.execute(
                "park_subscription_deliveries", ids=[r["id"] for r in (*disabled, *failing)]
            )
        return disabled, failing

    def _log_disabled(
        self, disabled: list[Mapping[str, Any]], failing: list[Mapping[str, Any]]
    ) -> None:
        """After the commit: say which subscriptions were disabled, and why."""
        for subscription in disabled:
            log.warning("subscription_disabled", subscription_id=subscription["id"], status=410)
            metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
        for subscription in failing:
            log.warning(
                "subscription_disabled",
                subscription_id=subscription["id"],
                failing_for_s=self.settings.webhook_disable_after_s,
            )
            metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
