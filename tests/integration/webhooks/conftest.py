"""Webhook test fixtures: a real receiver and dispatchers on the test database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from relay.core.egress import create_webhook_session
from relay.core.store import Store
from relay.delivery.dispatcher import Dispatcher, DispatcherSettings
from tests.helpers import make_settings
from tests.receiver import Receiver, running_receiver

# Dispatcher settings for tests: a quick idle poll and a short retry schedule, so retries
# and backstop polls happen within a test's deadline.
FAST_DISPATCH = {
    "dispatch_idle_poll_s": "100ms",
    "webhook_retry_schedule": "50ms,50ms,50ms",
}
# Stopping a running dispatcher: its in-flight attempts end within the webhook timeout.
STOP_TIMEOUT_S = 10.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (records requests, answers from a script)."""
    async with running_receiver() as r:
        yield r


@dataclass
class Dispatchers:
    """Builds Dispatchers on the test database; stops and closes them at teardown."""

    store: Store
    database_url: str
    upstream_url: str
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _running: list[tuple[Dispatcher, asyncio.Task[None]]] = field(default_factory=list)

    def make(self, *, clock: Callable[[], float] = time.time, **overrides: Any) -> Dispatcher:
        """A dispatcher (not running: drive it with run_once) with FAST_DISPATCH settings."""
        settings = make_settings(
            self.database_url, self.upstream_url, **{**FAST_DISPATCH, **overrides}
        )
        session = create_webhook_session(settings)
        self._sessions.append(session)
        return Dispatcher(
            self.store, session, DispatcherSettings.from_settings(settings), clock=clock
        )

    async def start(self, **overrides: Any) -> Dispatcher:
        """A dispatcher running its loop (LISTEN wake-ups included) until teardown."""
        dispatcher = self.make(**overrides)
        task = asyncio.create_task(dispatcher.run(), name="test-dispatcher")
        self._running.append((dispatcher, task))
        return dispatcher

    async def close(self) -> None:
        """Stop running dispatchers (cancelled if they overrun), hand back leases, close."""
        for dispatcher, task in self._running:
            dispatcher.stop()
            try:
                await asyncio.wait_for(task, STOP_TIMEOUT_S)
            except TimeoutError:
                pass
            await dispatcher.release()
        for session in self._sessions:
            await session.close()


@pytest.fixture
async def dispatchers(
    store: Store, database_url: str, simulator: TestServer
) -> AsyncIterator[Dispatchers]:
    """Make or start dispatchers against the test database."""
    made = Dispatchers(store, database_url, str(simulator.make_url("")).rstrip("/"))
    yield made
    await made.close()
