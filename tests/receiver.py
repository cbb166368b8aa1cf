"""A webhook receiver for tests: records every request, answers from a switchable script.

Runs as a real aiohttp server on loopback. A test queues replies (`script(...)`, optionally for one
path) that are used one per request, in order; when no queued reply applies the `default`
reply answers. Every request is recorded with its path, headers and raw body, so a test can
verify signatures exactly as a real subscriber would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    # Hold the answer this long (to make the relay time out, or to be "mid-delivery").
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` header."""
        return self.headers["webhook-id"]

    @property
    def event_type(self) -> str:
        """The `type` of the webhook body."""
        return self.json["type"]


class Receiver:
    """State of one receiver server: what it got and how it will answer."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default = Reply()
        self._scripts: dict[str | None, list[Reply]] = {}
        self._closing = asyncio.Event()
        self.server: TestServer | None = None
        # Requests being answered right now, and the most there ever were at once.
        self.active = 0
        self.max_active = 0

    def script(self, *replies: Reply | int, path: str | None = None) -> None:
        """Answer the next requests (on `path`, or on any path) with these replies, in order.

        Ints are status codes. A path's own script is used before the any-path script.
        """
        queue = self._scripts.setdefault(path, [])
        queue.extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def release(self) -> None:
        """End every held (delayed) answer now; later delays are skipped too."""
        self._closing.set()

    def url(self, path: str = "/hooks", *, host: str | None = None) -> str:
        """The receiver's URL for `path` (optionally with another host name, e.g. localhost)."""
        assert self.server is not None
        return f"http://{host or self.server.host}:{self.server.port}{path}"

    def on(self, path: str) -> list[Received]:
        """Requests received on `path`."""
        return [r for r in self.requests if r.path == path]

    async def wait_for_requests(
        self, count: int, *, path: str | None = None, timeout: float = 10.0
    ) -> list[Received]:
        """Wait until at least `count` requests (on `path`, if given) have arrived."""

        async def arrived() -> list[Received] | None:
            got = self.on(path) if path else list(self.requests)
            return got if len(got) >= count else None

        return await wait_for(arrived, timeout=timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._answer(request)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        queue = self._scripts.get(request.path) or self._scripts.get(None)
        reply = queue.pop(0) if queue else self.default
        if reply.delay_s:
            # The receiver being slow (not a wait in a test); release() cuts it short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    def app(self) -> web.Application:
        """The aiohttp application answering every path."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 for the duration of the block."""
    receiver = Receiver()
    server = TestServer(receiver.app(), host="127.0.0.1")
    await server.start_server()
    receiver.server = server
    try:
        yield receiver
    finally:
        receiver.release()
        await server.close()
