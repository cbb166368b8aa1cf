"""The shape every background loop shares: passes until stop(), woken early by wake().

A loop is its `run_pass()` (claim a batch, handle it) plus, where needed, small hooks:
`lanes` passes run concurrently, `side_task()` runs beside them for the loop's lifetime
(the dispatcher's LISTEN connection), and a pass may hand work to `start_work()` instead
of awaiting it, so the next pass can claim while that work is still in flight.
`run()` is the production path; `run_once()` is one pass with its work awaited, so tests
drive exactly the code production runs (arq's burst mode).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

import structlog

from relay.core.store import database_problem, database_unavailable

log = structlog.get_logger(__name__)


def new_owner_id(role: str) -> str:
    """A lease owner id unique per process start (a pod name would survive restarts)."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Loop:
    """A background loop: `run_pass()` until stopped; idles on "woken, interval, or stop"."""

    name = "loop"
    # Passes run concurrently: while one waits on the network, another claims or writes.
    lanes = 1

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._work: set[asyncio.Task[None]] = set()
        # True while passes fail because the database is unavailable (logged once).
        self._database_down = False

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming new work; run() returns once the current passes and work end."""
        self._stopping.set()
        self._woken.set()

    def wake(self) -> None:
        """Start the next pass now rather than after the idle interval."""
        self._woken.set()

    async def run_pass(self) -> int:
        """One pass; returns how many items it claimed (0: nothing was due)."""
        raise NotImplementedError

    async def idle_for(self) -> float:
        """How long an idle lane waits for a wake-up before its next pass (`idle_s` here)."""
        return self.idle_s

    async def side_task(self) -> None:
        """Runs beside the passes while the loop runs (cancelled when it ends); none by default."""

    async def release(self) -> None:
        """Shutdown: hand back anything still leased so another replica takes it at once."""

    def start_work(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `work` without holding up the next pass; the loop is woken when it ends.

        `run()` waits for started work before it returns; `run_once()` awaits it at once.
        """
        task = asyncio.create_task(work, name=name)
        self._work.add(task)
        task.add_done_callback(self._work_ended)

    def _work_ended(self, task: asyncio.Task[None]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Whatever the work had leased stays leased; the lease expires and it is retried.
            log.error(
                "loop_work_failed", loop=self.name, work=task.get_name(), exc_info=task.exception()
            )
        self.wake()  # room was freed, and what waited behind this work may now be due

    def _pass_failed(self, exc: Exception) -> None:
        """Log a failed pass: a database outage once (one line) while it lasts, bugs always."""
        if not database_unavailable(exc):
            log.error("loop_pass_failed", loop=self.name, exc_info=exc)
            return
        if not self._database_down:
            self._database_down = True
            log.warning(
                "loop_database_unavailable",
                loop=self.name,
                error=type(exc).__name__,
                problem=database_problem(exc) or "unreachable",
                hint="check RELAY_DATABASE_URL; the loop retries by itself",
            )

    async def run_once(self) -> int:
        """One pass and the work it started, to the end; returns how many items it claimed."""
        handled = await self.run_pass()
        while self._work:
            # Cancelling run_once() cancels the work too, as a dying process would.
            await asyncio.gather(*self._work)
        return handled

    async def run(self) -> None:
        """Run `lanes` passes concurrently until stopped, then wait for the work in flight."""
        log.info("loop_started", loop=self.name)
        beside = asyncio.create_task(self.side_task(), name=f"relay-{self.name}-side")
        try:
            await asyncio.gather(*(self._lane() for _ in range(self.lanes)))
            if self._work:
                await asyncio.wait(set(self._work))
        finally:
            beside.cancel()
            for task in self._work:
                task.cancel()
            await asyncio.gather(beside, *self._work, return_exceptions=True)
        log.info("loop_stopped", loop=self.name)

    async def _lane(self) -> None:
        """Passes until stopped. A pass that fails is logged and retried after the interval."""
        while not self.stopping:
            self._woken.clear()
            try:
                handled = await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A database blip must not kill the loop; the next pass retries.
                self._pass_failed(exc)
                handled = 0
            else:
                if self._database_down:
                    self._database_down = False
                    log.info("loop_database_available", loop=self.name)
            if handled or self.stopping:
                await asyncio.sleep(0)  # let other tasks run between busy passes
                continue
            try:
                idle = await self.idle_for()
            except Exception as exc:
                self._pass_failed(exc)
                idle = self.idle_s
            try:
                await asyncio.wait_for(self._woken.wait(), timeout=idle)
            except TimeoutError:
                pass
