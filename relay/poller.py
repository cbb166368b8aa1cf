"""Polls upstream for every in-flight task. (Being written.)"""

from __future__ import annotations

from relay.loops import Loop


class Poller(Loop):
    """Claims due tasks, polls upstream, records changes."""

    name = "poller"

    def __init__(self, store: object, upstream: object, settings: object) -> None:
        super().__init__(1.0)

    async def run_once(self) -> int:
        """One pass."""
        return 0
