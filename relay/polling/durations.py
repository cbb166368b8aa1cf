"""How long tasks take, learned from the relay's own finished phases and kept in Postgres.

The poller records a sample each time it sees a task leave a phase (queued, processing):
the time from the phase's estimated start to the middle of the window in which the change
happened. Every replica reads the newest samples back (every `REFRESH_S` at most, sooner
for phases short enough that a tenth of a minute matters) and turns them into
the distributions `relay.polling.schedule` plans with, so what one replica learns, all use,
and a restart forgets nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from relay.core.store import Db, Store
from relay.polling.schedule import DurationKnowledge

log = structlog.get_logger(__name__)

# Samples per (model, input class, phase) the distributions are built from: enough for
# stable quantiles, few enough that a change upstream shows within a few hundred tasks.
SAMPLES_PER_CLASS = 200
# Samples kept per class in the table (the rest is pruned).
SAMPLES_KEPT = 1000
# Replicas re-read the samples at most this far apart; learning is slow-moving, a read is
# one query.
REFRESH_S = 10.0
# ...and at least this often per shortest learned phase median, so what was learned keeps
# pace with how fast tasks move (a queue of a few seconds is re-learned within a second);
# never more often than REFRESH_MIN_S. Nothing learned yet: every REFRESH_MIN_S, so the
# first samples are used at once.
REFRESH_SHARE = 0.05
REFRESH_MIN_S = 0.5
# Old samples are pruned this often per replica.
PRUNE_S = 600.0


class DurationModel:
    """The shared knowledge of phase durations, refreshed from Postgres when stale."""

    def __init__(self, store: Store, *, clock: Any = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.knowledge = DurationKnowledge.empty()
        self._refreshed_at: float | None = None
        self._pruned_at: float | None = None

    async def current(self) -> DurationKnowledge:
        """The distributions, re-read when older than REFRESH_S (a failed read keeps the old)."""
        now = self.clock()
        if self._refreshed_at is None or now - self._refreshed_at >= self.refresh_s():
            self._refreshed_at = now
            try:
                await self.refresh()
            except Exception:
                # Polls go on with what was known; the next refresh tries again.
                log.exception("phase_durations_refresh_failed")
        return self.knowledge

    def refresh_s(self) -> float:
        """How stale the distributions may get: a share of the shortest learned median."""
        medians = [d.quantile(0.5) for d in self.knowledge.by_model.values()]
        if not medians:
            return REFRESH_MIN_S
        return min(max(REFRESH_SHARE * min(medians), REFRESH_MIN_S), REFRESH_S)

    async def refresh(self) -> None:
        """Read the newest samples and rebuild every distribution."""
        rows = await self.store.fetch("recent_phase_durations", per_class=SAMPLES_PER_CLASS)
        samples = {(r["model"], r["input_class"], r["phase"]): list(r["seconds"]) for r in rows}
        # Smoothing a few thousand samples takes tens of milliseconds: off the event loop.
        self.knowledge = await asyncio.to_thread(DurationKnowledge.from_samples, samples)
        if self._pruned_at is None or self.clock() - self._pruned_at >= PRUNE_S:
            self._pruned_at = self.clock()
            await self.store.execute("prune_phase_durations", keep=SAMPLES_KEPT)


async def record_phase_durations(db: Db, samples: Sequence[Mapping[str, Any]]) -> None:
    """Append samples (`model`, `input_class`, `phase`, `seconds`) inside the poll's transaction."""
    if samples:
        await db.execute("insert_phase_durations", samples=list(samples))
