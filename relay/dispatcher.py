"""Delivers signed webhooks from the outbox: claim a batch, send it, record every attempt.

A delivery is leased by setting `next_attempt_at` to now + lease and `lease_owner` to this
dispatcher; the HTTP call happens outside any transaction; the outcome is written by a
query that only touches rows whose lease is still ours. A dispatcher that dies therefore
leaves its deliveries to whoever claims them after the lease, with the same webhook-id.

Dispatchers sleep on LISTEN relay_outbox (a dedicated connection, reconnected with
backoff) and poll every `dispatch_idle_poll_s` as a backstop for missed notifications.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from relay import __version__, metrics
from relay.config import Settings
from relay.loops import Loop, new_owner_id
from relay.signing import webhook_headers
from relay.store import OUTBOX_CHANNEL, Store
from relay.upstream.client import parse_retry_after

log = structlog.get_logger(__name__)

USER_AGENT = f"mindvideo-relay/{__version__}"
# Acknowledgement bodies are tiny; reading at most this much keeps a hostile or broken
# receiver from making us buffer megabytes, while small bodies are read whole so the
# connection can be reused.
RESPONSE_READ_LIMIT = 64 * 1024
# What an attempt record keeps of the response body: enough to show a receiver's error.
RESPONSE_EXCERPT_BYTES = 1024
# Errors are stored and shown to clients; a bound keeps one odd exception from bloating rows.
ERROR_MAX_CHARS = 500
# The retry schedule is spread by ±20% so receivers recovering from an outage are not hit
# by every queued delivery at the same second.
RETRY_JITTER = 0.2
# A receiver's Retry-After is honoured when longer than the schedule, but cannot park a
# delivery for more than a day.
RETRY_AFTER_MAX_S = 86400.0
# Statuses whose Retry-After header means "come back later" (RFC 9110).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# A resolved address is cached this long: short, so a changed DNS record (or a rebinding
# attempt) is re-resolved and re-checked against the deny list soon.
DNS_CACHE_TTL_S = 10
# LISTEN reconnect backoff: quick first retry (a database restart is usually brief), capped
# so a long outage costs one connection attempt every half minute.
# Outcomes finishing within this window of each other are written in one transaction:
# a few milliseconds of delay buys one commit per group instead of one per delivery.
GROUP_COMMIT_WINDOW_S = 0.005
LISTEN_RETRY_MIN_S = 0.2
LISTEN_RETRY_MAX_S = 30.0


class DeniedAddress(OSError):
    """The webhook target is (or resolves to) an address in RELAY_WEBHOOK_DENY_CIDRS."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def denied_network(address: str, deny: Sequence[Network]) -> Network | None:
    """The denied network containing `address` (an IP literal), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return None
    # ::ffff:169.254.169.254 reaches the IPv4 address: check it as IPv4 too.
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for candidate in candidates:
        for network in deny:
            if candidate.version == network.version and candidate in network:
                return network
    return None


def literal_ip_denied(url: str, deny: Sequence[Network]) -> str | None:
    """Why a URL whose host is an IP literal may not be called (None: allowed or a name).

    aiohttp does not pass IP literals through the resolver, so they are checked here.
    """
    return _literal_ip_denied(url, tuple(deny))


@functools.lru_cache(maxsize=4096)  # checked on every attempt; targets repeat
def _literal_ip_denied(url: str, deny: tuple[Network, ...]) -> str | None:
    host = URL(url).host or ""
    network = denied_network(host, deny)
    if network is None:
        return None
    return f"target address {host} is in denied network {network} (RELAY_WEBHOOK_DENY_CIDRS)"


class DenyingResolver(ThreadedResolver):
    """Resolves names, then refuses the connection if any address is in a denied network.

    Runs at connect time, so the check applies to the address actually dialled.
    """

    def __init__(self, deny: Sequence[Network]) -> None:
        super().__init__()
        self.deny = tuple(deny)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`; DeniedAddress when one of them is denied."""
        results = await super().resolve(host, port, family)
        for result in results:
            network = denied_network(result["host"], self.deny)
            if network is not None:
                raise DeniedAddress(
                    f"{host} resolves to {result['host']}, in denied network {network} "
                    "(RELAY_WEBHOOK_DENY_CIDRS)"
                )
        return results


def create_webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The one ClientSession webhooks leave through.

    Certificates are verified (aiohttp's default), resolved addresses are checked against
    the deny list, no cookies are kept between receivers, proxies from the environment are
    ignored (a proxy would hide the real target from the address check). Call inside the
    running event loop.
    """
    connector = aiohttp.TCPConnector(
        limit=settings.dispatch_concurrency,
        resolver=DenyingResolver(settings.webhook_deny_cidrs),
        ttl_dns_cache=DNS_CACHE_TTL_S,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt produced."""

    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_s: float
    started_at: datetime
    retry_after_s: float | None = None

    @property
    def succeeded(self) -> bool:
        """Any 2xx is a success; everything else (3xx included) is a failed attempt."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class NextStep:
    """Where a delivery goes after an attempt."""

    status: str
    retry_delay_s: float | None
    retry_index: int
    disable_subscription: bool = False


def plan_next_step(result: AttemptResult, retry_index: int, schedule: Sequence[float]) -> NextStep:
    """Succeeded, retry after the (jittered) schedule or Retry-After, or dead.

    410 Gone is final: the delivery is dead and its subscription is disabled.
    """
    if result.succeeded:
        return NextStep("succeeded", None, retry_index)
    if result.status_code == 410:
        return NextStep("dead", None, retry_index, disable_subscription=True)
    if retry_index >= len(schedule):
        return NextStep("dead", None, retry_index)
    delay = schedule[retry_index] * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    if result.retry_after_s is not None:
        delay = max(delay, min(result.retry_after_s, RETRY_AFTER_MAX_S))
    return NextStep("failed", delay, retry_index + 1)


def _error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    cause = exc.__cause__ if isinstance(exc.__cause__, DeniedAddress) else None
    if cause is not None:
        return f"denied: {cause}"
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _excerpt(body: bytes) -> str | None:
    if not body:
        return None
    # Postgres text cannot hold NUL; a binary error page is shown as best it can be.
    return body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "")


class Dispatcher(Loop):
    """Claims due deliveries, sends them, records the outcome.

    Concurrency is bounded at claim time: at most `dispatch_concurrency` deliveries in
    flight in this process and at most `dispatch_per_target_concurrency` per target
    (subscriber), so every claimed delivery starts at once and none waits out its lease.
    `run()` keeps claiming while earlier batches are still in flight, so a slow receiver
    never holds up the others; `run_once()` handles one batch to the end (for tests).
    """

    name = "dispatcher"

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        settings: Settings,
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
        self._batches: set[asyncio.Task[None]] = set()

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
        """Send a claimed batch concurrently; record outcomes as they come (group commit).

        Outcomes that finish together are written by one `complete_deliveries` call; a slow
        attempt does not hold back the recording of the fast ones.
        """
        # Finished attempts arrive on a queue: O(1) per completion, however large the batch.
        results: asyncio.Queue[tuple[Mapping[str, Any], AttemptResult | None]] = asyncio.Queue()

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
            results.put_nowait((row, result))

        tasks = [asyncio.create_task(attempt(row), name=f"webhook-{row['id']}") for row in batch]
        unrecorded = {row["id"]: row for row in batch}
        try:
            while unrecorded:
                finished = [await results.get()]
                if len(unrecorded) > 1:
                    await asyncio.sleep(GROUP_COMMIT_WINDOW_S)  # let neighbours join the commit
                while not results.empty():
                    finished.append(results.get_nowait())
                try:
                    await self._record([(row, res) for row, res in finished if res is not None])
                finally:
                    for row, _ in finished:
                        del unrecorded[row["id"]]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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

    async def run_once(self) -> int:
        """Claim one batch, send it, record every outcome; returns how many were claimed."""
        batch = await self.claim_due()
        if batch:
            await self.deliver(batch)
        return len(batch)

    async def run(self) -> None:
        """Claim while there is room, woken by NOTIFY, a finished batch, or the idle poll."""
        log.info("loop_started", loop=self.name)
        listener = asyncio.create_task(self._listen_for_outbox(), name="relay-dispatcher-listen")
        try:
            while not self.stopping:
                self._woken.clear()
                try:
                    batch = await self.claim_due()
                except Exception:
                    # A database blip must not kill the loop; the next pass retries.
                    log.exception("loop_pass_failed", loop=self.name)
                    batch = []
                if batch:
                    self._start_batch(batch)
                    await asyncio.sleep(0)
                    continue
                try:
                    await asyncio.wait_for(self._woken.wait(), timeout=self.idle_s)
                except TimeoutError:
                    pass
            if self._batches:
                await asyncio.wait(set(self._batches))
        finally:
            listener.cancel()
            for task in self._batches:
                task.cancel()
            await asyncio.gather(listener, *self._batches, return_exceptions=True)
        log.info("loop_stopped", loop=self.name)

    def _start_batch(self, batch: Sequence[Mapping[str, Any]]) -> None:
        task = asyncio.create_task(self.deliver(batch), name="relay-dispatcher-batch")
        self._batches.add(task)
        task.add_done_callback(self._batch_ended)

    def _batch_ended(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Outcomes not written stay leased; the lease expires and they are retried.
            log.error("webhook_batch_failed", exc_info=task.exception())
        self.wake()  # room was freed, and later events of these tasks may now be due

    async def release(self) -> None:
        """Hand back every delivery still leased to this dispatcher, its attempt uncounted."""
        await self.store.execute("release_delivery_leases", owner=self.owner)

    async def _listen_for_outbox(self) -> None:
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

    async def _attempt(self, row: Mapping[str, Any]) -> AttemptResult:
        """One signed POST; never raises for anything the receiver or network does."""
        now = self.clock()
        started_at = datetime.fromtimestamp(now, UTC)
        denied = literal_ip_denied(row["url"], self.settings.webhook_deny_cidrs)
        if denied is not None:
            return AttemptResult(None, None, f"denied: {denied}", 0.0, started_at)
        # The stored jsonb rendered by Postgres: the same bytes on every retry, no re-encoding.
        body = row["body"].encode()
        secrets = [row["secret"]]
        if row["previous_secret"]:
            secrets.append(row["previous_secret"])
        headers = {
            "Content-Type": "application/json",
            **webhook_headers(secrets, row["event_id"], int(now), body),
        }
        timeout_s = self.settings.webhook_timeout_s
        started = time.perf_counter()
        try:
            async with self.session.post(
                row["url"],
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                excerpt = _excerpt(await _read_bounded(response, RESPONSE_READ_LIMIT))
                retry_after = None
                if response.status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
                return AttemptResult(
                    response.status,
                    excerpt,
                    _status_error(response.status),
                    time.perf_counter() - started,
                    started_at,
                    retry_after,
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use; all of these are failed attempts.
            return AttemptResult(
                None, None, _error_text(exc, timeout_s), time.perf_counter() - started, started_at
            )

    async def _record(self, finished: list[tuple[Mapping[str, Any], AttemptResult]]) -> None:
        if not finished:
            return
        schedule = self.settings.webhook_retry_schedule
        outcomes = []
        gone = []
        for row, result in finished:
            step = plan_next_step(result, row["retry_index"], schedule)
            if step.disable_subscription and row["subscription_id"]:
                gone.append(row["subscription_id"])
            outcomes.append((row, result, step))
        async with self.store.transaction() as db:
            recorded = await db.fetch(
                "complete_deliveries",
                owner=self.owner,
                outcomes=[
                    {
                        "id": row["id"],
                        "attempt": row["attempt_count"],
                        "status": step.status,
                        "status_code": result.status_code,
                        "response_excerpt": result.response_excerpt,
                        "error": result.error,
                        "latency_ms": round(result.latency_s * 1000, 3),
                        "started_at": result.started_at,
                        "retry_delay_s": step.retry_delay_s,
                        "retry_index": step.retry_index,
                    }
                    for row, result, step in outcomes
                ],
            )
            disabled = []
            if gone:
                disabled = await db.fetch(
                    "disable_subscriptions", ids=gone, reason="endpoint answered 410 Gone"
                )
        recorded_ids = {r["delivery_id"] for r in recorded}
        for subscription in disabled:
            log.warning("subscription_disabled", subscription_id=subscription["id"], status=410)
            metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
        for row, result, step in outcomes:
            if row["id"] not in recorded_ids:
                # Our lease ran out and another dispatcher owns the delivery now.
                log.warning("webhook_lease_lost", delivery_id=row["id"])
                continue
            metrics.WEBHOOK_DELIVERIES.labels(step.status).inc()
            metrics.WEBHOOK_SECONDS.observe(result.latency_s)
            if step.status == "succeeded":
                lag_s = max(time.time() - row["event_created_at"].timestamp(), 0.0)
                metrics.WEBHOOK_LAG.observe(lag_s)
                log.info(
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
