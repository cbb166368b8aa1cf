"""The shape every background loop shares: run() until stop(), woken early by wake()."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import structlog

log = structlog.get_logger(__name__)


def new_owner_id(role: str) -> str:
    """A lease owner id unique per process start (a pod name would survive restarts)."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Loop:
    """A background loop: `run_once()` until stopped; idles on "woken, interval, or stop"."""

    name = "loop"

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming new work; run() returns after the current pass."""
        self._stopping.set()
        self._woken.set()

    def wake(self) -> None:
        """Start the next pass now rather than after the idle interval."""
        self._woken.set()

    async def run_once(self) -> int:
        """One pass; returns how many items it handled (0: nothing was due)."""
        raise NotImplementedError

    async def release(self) -> None:
        """Shutdown: hand back anything still leased so another replica takes it at once."""

    async def run(self) -> None:
        """Loop until stopped. A pass that fails is logged and retried after the interval."""
        log.info("loop_started", loop=self.name)
        while not self.stopping:
            self._woken.clear()
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database blip must not kill the loop; the next pass retries.
                log.exception("loop_pass_failed", loop=self.name)
                handled = 0
            if handled or self.stopping:
                await asyncio.sleep(0)  # let other tasks run between busy passes
                continue
            try:
                await asyncio.wait_for(self._woken.wait(), timeout=self.idle_s)
            except TimeoutError:
                pass
        log.info("loop_stopped", loop=self.name)
