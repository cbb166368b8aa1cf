"""`relay serve` settles the garbage collector once started (relay.cli.main.settle_gc)."""

from __future__ import annotations

import gc
import weakref

from relay.cli.main import GC_THRESHOLDS, settle_gc


class Node:
    """An object that can take part in a reference cycle."""

    other: Node | None = None


def test_settle_gc_freezes_what_exists_and_still_collects_cycles_by_itself() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 0  # what existed at start-up is left alone from now on
        assert gc.get_threshold() == GC_THRESHOLDS

        gc.collect()  # counts start at zero: no collection falls between the next lines
        cycle = Node()
        cycle.other = cycle
        gone = weakref.ref(cycle)
        del cycle
        # Allocations alone (no gc.collect()) still trigger collections that free cycles.
        churn = [[] for _ in range(3 * GC_THRESHOLDS[0])]
        del churn
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
