"""The upstream request budget: one ceiling for the whole deployment, shared through Postgres.

`RELAY_UPSTREAM_MAX_RPS` is MindVideo's limit for the account, not for one replica, so
the tokens live in one row (`upstream_budget`), a token bucket refilled by elapsed time.
Every replica takes tokens from it with one statement; nothing else coordinates them (no
leader, no Redis).

Two priorities share the bucket. Urgent callers (a submission, a cancel) may empty it.
Background callers (polls, and the events of a task whose status moved) leave `reserve`
tokens in it, so a submission arriving while polls saturate the ceiling still finds a
token at once. Polls take their tokens in bulk before claiming tasks, so a pass never
claims more tasks than it may ask about.

Within a replica, callers that must wait for a token do not each ask Postgres: they queue
here, urgent ones first, and one feeder task takes tokens for all of them as the bucket
refills. Urgent tokens are taken a few at a time (`URGENT_CHUNK_S` of the rate) and kept
briefly, so a burst of submissions costs one statement per chunk, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import structlog

from relay.core import metrics
from relay.core.store import Store

log = structlog.get_logger(__name__)

# A bucket holds at most this many seconds of the rate: short, so an idle minute does not
# become a burst upstream would refuse.
BURST_S = 1.0
# Background callers leave this share of a full bucket to urgent ones.
RESERVE_SHARE = 0.25
# Urgent tokens are taken this many seconds of the rate at a time (at least one)...
URGENT_CHUNK_S = 0.05
# ...and kept this long at most; unspent ones lapse (a replica never hoards the ceiling).
LOCAL_TOKENS_TTL_S = 0.2
# The feeder looks again at least this often while callers wait (and at most every second).
MIN_WAIT_S = 0.01


class UpstreamBudget:
    """Takes tokens from the shared bucket: at once (`take`) or waiting for them (`wait`)."""

    def __init__(self, store: Store, *, rate: float, burst: float | None = None) -> None:
        self.store = store
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * BURST_S)
        self.reserve = self.burst * RESERVE_SHARE
        self._chunk = max(1, int(rate * URGENT_CHUNK_S))
        self._local = 0
        self._local_until = 0.0
        self._waiters: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}
        self._feeder: asyncio.Task[None] | None = None
        self._fetching = asyncio.Lock()
        metrics.UPSTREAM_BUDGET_CEILING.set(rate)

    async def take(self, wanted: int, *, urgent: bool) -> int:
        """Up to `wanted` tokens now (0 when none are free for this priority). Never waits
        for the bucket to refill (urgent callers may wait for a chunk another is fetching)."""
        if wanted <= 0:
            return 0
        if not urgent:
            granted, _ = await self._take(wanted, urgent=False)
            return granted
        granted = self._take_local(wanted)
        if granted == wanted:
            return granted
        # One chunk at a time per replica: callers arriving together share the chunk the
        # first one fetches instead of each draining a chunk from the shared bucket (and
        # finding it empty when the burst is smaller than callers x chunk).
        async with self._fetching:
            granted += self._take_local(wanted - granted)
            if granted < wanted:
                fetched, _ = await self._take(max(wanted - granted, self._chunk), urgent=True)
                used = min(fetched, wanted - granted)
                granted += used
                self._keep_local(fetched - used)
        return granted

    async def wait(self, wanted: int = 1, *, urgent: bool = True) -> int:
        """One token, waiting in this replica's queue (urgent callers first) if need be."""
        if urgent and self._take_local(1):
            return 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[urgent].append(waiter)
        if self._feeder is None or self._feeder.done():
            self._feeder = asyncio.create_task(self._feed(), name="relay-budget-feeder")
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                await self.give_back(1)  # granted as we were cancelled: not ours to spend
            raise
        return 1

    async def give_back(self, tokens: int) -> None:
        """Return tokens taken but not spent (a pass found fewer due tasks than it paid for)."""
        if tokens > 0:
            await self.store.execute("return_upstream_budget", tokens=tokens, burst=self.burst)
            metrics.UPSTREAM_BUDGET_TOKENS.labels("returned").inc(tokens)

    def _keep_local(self, tokens: int) -> None:
        """Keep tokens taken from the bucket but not spent yet, for `LOCAL_TOKENS_TTL_S`."""
        if tokens > 0:
            self._local = self._take_local(self._local) + tokens  # lapsed ones are dropped
            self._local_until = time.monotonic() + LOCAL_TOKENS_TTL_S

    def _take_local(self, wanted: int) -> int:
        if self._local and time.monotonic() > self._local_until:
            self._local = 0  # lapsed
        granted = min(wanted, self._local)
        self._local -= granted
        return granted

    async def _feed(self) -> None:
        """Take tokens for the queued callers until none is left waiting."""
        while True:
            for queue in self._waiters.values():
                while queue and queue[0].done():  # cancelled while queued
                    queue.popleft()
            urgent = bool(self._waiters[True])
            waiting = len(self._waiters[True]) + len(self._waiters[False])
            if not waiting:
                return
            try:
                granted, level = await self._take(waiting, urgent=urgent)
            except Exception:
                # The database is away: callers keep waiting, the feeder tries again.
                log.warning("upstream_budget_unavailable", exc_info=True)
                granted, level = 0, 0.0
            for _ in range(granted):
                queue = self._waiters[True] or self._waiters[False]
                while queue and queue[0].done():
                    queue.popleft()
                if not queue:
                    await self.give_back(1)
                    continue
                queue.popleft().set_result(None)
            if not granted:
                keep = 0.0 if urgent else self.reserve
                deficit = max(1.0 + keep - level, 0.0)
                await asyncio.sleep(min(max(deficit / self.rate, MIN_WAIT_S), 1.0))

    async def _take(self, wanted: int, *, urgent: bool) -> tuple[int, float]:
        async with self.store.transaction() as db:
            # A budget update lost in a crash only frees a fraction of a second of tokens:
            # not worth waiting for the disk.
            await db.execute("relax_commit")
            row = await db.fetchrow(
                "take_upstream_budget",
                wanted=wanted,
                keep=0.0 if urgent else self.reserve,
                rate=self.rate,
                burst=self.burst,
            )
        assert row is not None
        granted = int(row["granted"])
        if granted:
            metrics.UPSTREAM_BUDGET_TOKENS.labels("urgent" if urgent else "background").inc(granted)
        return granted, float(row["level"])
