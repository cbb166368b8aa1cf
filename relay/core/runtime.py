"""The background loops of a process: started per role, stopped gracefully, never half alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from relay.core.loops import Loop

log = structlog.get_logger(__name__)


class Runtime:
    """Owns the loops of this process. If a loop dies, the process is told to stop."""

    def __init__(self, loops: dict[str, Loop], *, active: set[str], grace_s: float) -> None:
        self.loops = loops
        self.active = active
        self.grace_s = grace_s
        self.on_fatal: Callable[[str], None] = lambda name: None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def loop(self, name: str) -> Loop:
        """A loop by name (tests drive them with run_once())."""
        return self.loops[name]

    def start(self) -> None:
        """Start every active loop as a named task."""
        for name, loop in self.loops.items():
            if name in self.active:
                task = asyncio.create_task(loop.run(), name=f"relay-{name}")
                task.add_done_callback(self._ended)
                self._tasks[name] = task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        name = task.get_name()
        error = None if task.cancelled() else task.exception()
        log.critical("loop_died", loop=name, error=repr(error))
        self.on_fatal(name)

    async def stop(self) -> None:
        """Stop claiming, let in-flight work finish within the grace, release leases."""
        self._stopping = True
        for loop in self.loops.values():
            loop.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks.values(), timeout=self.grace_s)
            for task in pending:
                log.warning("loop_cancelled_after_grace", loop=task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for name, loop in self.loops.items():
            if name in self._tasks:
                try:
                    await loop.release()
                except Exception:
                    log.exception("lease_release_failed", loop=name)
        log.info("runtime_stopped")
