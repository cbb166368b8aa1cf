"""The upstream request budget: one ceiling for the whole deployment, shared through Postgres.

`RELAY_UPSTREAM_MAX_RPS` is MindVideo's limit for the account, not for one replica, so
the tokens live in one row (`upstream_budget`), a token bucket refilled by elapsed time.
Every replica takes tokens from it with one statement; nothing else coordinates them (no
leader, no Redis).

Two priorities share the bucket. Urgent callers (a submission, a cancel, the events of a
task whose status just moved) may empty it. Background polls leave `reserve` tokens in it,
so a submission arriving while polls saturate the ceiling still finds a token at once.
Polls take their tokens in bulk before claiming tasks, so a pass never claims more tasks
than it may ask about.
"""

from __future__ import annotations

import asyncio

from relay import metrics
from relay.store import Store

# A bucket holds at most this many seconds of the rate: short, so an idle minute does not
# become a burst upstream would refuse.
BURST_S = 1.0
# Background polls leave this share of a full bucket to urgent callers.
RESERVE_SHARE = 0.25
# Waiting callers look again at least this often (and at most every second).
MIN_WAIT_S = 0.01


class UpstreamBudget:
    """Takes tokens from the shared bucket: at once (`take`) or waiting for them (`wait`)."""

    def __init__(self, store: Store, *, rate: float) -> None:
        self.store = store
        self.rate = rate
        self.burst = max(1.0, rate * BURST_S)
        self.reserve = self.burst * RESERVE_SHARE
        metrics.UPSTREAM_BUDGET_CEILING.set(rate)

    async def take(self, wanted: int, *, urgent: bool) -> int:
        """Up to `wanted` tokens now (0 when none are free for this priority)."""
        granted, _ = await self._take(wanted, urgent=urgent)
        return granted

    async def wait(self, wanted: int = 1, *, urgent: bool = True) -> int:
        """At least one token (up to `wanted`), waiting for the bucket to refill if need be."""
        while True:
            granted, level = await self._take(wanted, urgent=urgent)
            if granted:
                return granted
            keep = 0.0 if urgent else self.reserve
            deficit = max(1.0 + keep - level, 0.0)
            await asyncio.sleep(min(max(deficit / self.rate, MIN_WAIT_S), 1.0))

    async def give_back(self, tokens: int) -> None:
        """Return tokens taken but not spent (a pass found fewer due tasks than it paid for)."""
        if tokens > 0:
            await self.store.execute("return_upstream_budget", tokens=tokens, burst=self.burst)
            metrics.UPSTREAM_BUDGET_TOKENS.labels("returned").inc(tokens)

    async def _take(self, wanted: int, *, urgent: bool) -> tuple[int, float]:
        if wanted <= 0:
            return 0, 0.0
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
