"""The Python client (clients/python, `mindvideo_relay`) against a real relay on loopback.

Every test talks HTTP to a listening relay (and the simulator behind it); the webhook test
runs the poller and dispatcher too and verifies real deliveries in a small aiohttp receiver
with `verify_webhook`, as a service author would.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from mindvideo_relay import (
    AsyncRelayClient,
    AuthenticationError,
    Conflict,
    Event,
    NotFound,
    RateLimited,
    RelayClient,
    RelayConnectionError,
    ServiceUnavailable,
    SubmittedTask,
    ValidationError,
    WebhookVerificationError,
    verify_webhook,
)

from relay.upstream.simulator import SimulatorConfig
from tests.helpers import SAMPLE_INPUT, SIM_KEY, wait_for

MODEL = "kling-video-o1"


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Tasks finish fast, so a real poller walks them to `succeeded` within a test."""
    return SimulatorConfig(api_key=SIM_KEY, task_duration_s=0.4, seed=4321)


def base_url(api: TestClient) -> str:
    """The listening relay's base URL."""
    return str(api.make_url("")).rstrip("/")


@pytest.fixture
async def client_key(new_client) -> str:
    """A fresh client's API key."""
    return (await new_client())["key"]


@pytest.fixture
async def relay(relay_app: TestClient, client_key: str) -> AsyncIterator[AsyncRelayClient]:
    """The async client on the relay, as a fresh client."""
    async with AsyncRelayClient(base_url(relay_app), client_key, timeout=10) as client:
        yield client


async def test_submit_returns_the_task_and_a_replay_says_so(
    relay: AsyncRelayClient, relay_app: TestClient, client_key: str
) -> None:
    first = await relay.submit(MODEL, SAMPLE_INPUT, metadata={"order_id": "A-17"})
    assert isinstance(first, SubmittedTask)
    assert first.id.startswith("tsk_") and first.status == "queued" and first.model == MODEL
    assert first.metadata == {"order_id": "A-17"} and first.upstream_task_id
    assert not first.replayed
    assert uuid.UUID(first.idempotency_key)  # generated: a random UUID
    assert first.created_at.tzinfo is not None and not first.is_terminal

    again = await relay.submit(
        MODEL, SAMPLE_INPUT, metadata={"order_id": "A-17"}, idempotency_key=first.idempotency_key
    )
    assert again.replayed and again.id == first.id
    other = await relay.submit(MODEL, SAMPLE_INPUT, metadata={"order_id": "A-17"})
    assert other.id != first.id and other.idempotency_key != first.idempotency_key

    fetched = await relay.get_task(first.id)
    assert fetched.id == first.id and fetched.raw["id"] == first.id
    history = await relay.task_history(first.id)
    assert [(h.seq, h.type, h.to_status) for h in history] == [(1, "task.queued", "queued")]
    assert await relay.task_deliveries(first.id) == []

    # The sync client does the same (in a thread, so the relay's loop keeps serving).
    def sync_submit() -> tuple[SubmittedTask, SubmittedTask]:
        with RelayClient(base_url(relay_app), client_key) as client:
            made = client.submit(MODEL, SAMPLE_INPUT, idempotency_key="order-99")
            return made, client.submit(MODEL, SAMPLE_INPUT, idempotency_key="order-99")

    made, replay = await asyncio.to_thread(sync_submit)
    assert (made.replayed, replay.replayed) == (False, True)
    assert made.id == replay.id and made.idempotency_key == "order-99"


async def test_list_tasks_follows_next_cursor_with_filters(
    relay: AsyncRelayClient, relay_app: TestClient, client_key: str
) -> None:
    submitted = [await relay.submit(MODEL, SAMPLE_INPUT) for _ in range(5)]
    newest_first = [t.id for t in reversed(submitted)]

    page = await relay.list_tasks_page(limit=2)
    assert len(page.data) == 2 and page.next_cursor
    assert [t.id async for t in relay.list_tasks(limit=2)] == newest_first
    assert [t.id async for t in relay.list_tasks(status="queued", model=MODEL)] == newest_first
    assert [t.id async for t in relay.list_tasks(status="succeeded")] == []
    after_second = [t.id async for t in relay.list_tasks(created_after=submitted[1].created_at)]
    assert after_second == newest_first[:3]

    def sync_list() -> list[str]:
        with RelayClient(base_url(relay_app), client_key) as client:
            return [t.id for t in client.list_tasks(limit=3)]

    assert await asyncio.to_thread(sync_list) == newest_first


async def test_errors_are_raised_with_status_detail_and_field_errors(
    relay: AsyncRelayClient, relay_app: TestClient
) -> None:
    with pytest.raises(ValidationError) as invalid:
        await relay.submit(MODEL, {"prompt": "x", "duration": "long"}, metadata={"n": 1})
    error = invalid.value
    assert error.status == 422 and error.title and error.detail
    assert error.type.endswith("/validation")
    assert "/input/duration" in [e.loc for e in error.errors]
    assert all(e.message for e in error.errors)
    assert "/input/duration" in str(error)

    with pytest.raises(ValidationError) as unknown_model:
        await relay.submit("no-such-model", SAMPLE_INPUT)
    assert [e.loc for e in unknown_model.value.errors] == ["/model"]

    with pytest.raises(NotFound) as missing:
        await relay.get_task("tsk_does_not_exist")
    assert missing.value.status == 404 and missing.value.errors == []

    task = await relay.submit(MODEL, SAMPLE_INPUT, idempotency_key="same-key")
    with pytest.raises(Conflict) as conflict:
        await relay.submit(MODEL, {**SAMPLE_INPUT, "duration": 10}, idempotency_key="same-key")
    assert conflict.value.status == 409
    assert (await relay.get_task(task.id)).id == task.id

    async with AsyncRelayClient(base_url(relay_app), "rk_not_a_real_key") as stranger:
        with pytest.raises(AuthenticationError) as unauthorized:
            await stranger.get_task(task.id)
    assert unauthorized.value.status == 401


@dataclass
class FlakyProxy:
    """A real HTTP hop in front of the relay that fails the first submissions on purpose.

    Script per POST /v1/tasks: forward then answer 502 (the relay did create the task), then
    429 with Retry-After without forwarding, then forward faithfully.
    """

    target: str
    keys: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=lambda: ["forward-then-502", "429"])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        step = self.script.pop(0) if self.script else "forward"
        if step == "429":
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as session,
            session.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            payload = await upstream.read()
            if step == "forward-then-502":
                return web.Response(status=502, text="bad gateway")
            kept = {k: v for k, v in upstream.headers.items() if k.lower().startswith(("c", "i"))}
            kept.pop("Content-Length", None)
            return web.Response(status=upstream.status, body=payload, headers=kept)


async def test_submit_retries_502_and_429_with_the_same_key_and_creates_one_task(
    relay_app: TestClient, client_key: str
) -> None:
    proxy = FlakyProxy(base_url(relay_app))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    proxy_url = str(server.make_url("")).rstrip("/")
    try:
        async with AsyncRelayClient(proxy_url, client_key) as relay:
            task = await relay.submit(MODEL, SAMPLE_INPUT)
            assert len(proxy.keys) == 3 and set(proxy.keys) == {task.idempotency_key}
            # The first attempt created the task; the last one got it back as a replay.
            assert task.replayed
            assert [t.id async for t in relay.list_tasks()] == [task.id]
        async with AsyncRelayClient(proxy_url, client_key, max_retries=0) as impatient:
            proxy.script = ["429"]
            with pytest.raises(RateLimited) as refused:
                await impatient.submit(MODEL, SAMPLE_INPUT)
            assert refused.value.status == 429 and refused.value.retry_after == 0
    finally:
        await server.close()

    # Nothing listens: a connection error, raised once the retries are spent.
    async with AsyncRelayClient(proxy_url, client_key, max_retries=1) as gone:
        with pytest.raises(RelayConnectionError) as unreachable:
            await gone.get_task("tsk_x")
    assert unreachable.value.status is None


async def test_subscriptions_crud_and_rotation(relay: AsyncRelayClient) -> None:
    created = await relay.create_subscription(
        "http://127.0.0.1:9/hooks", events=["task.succeeded"], description="svc-a"
    )
    assert created.id.startswith("sub_") and created.secret and created.secret.startswith("whsec_")
    assert created.events == ["task.succeeded"] and created.enabled
    assert created.secret not in repr(created)  # secrets stay out of logs of the object

    fetched = await relay.get_subscription(created.id)
    assert fetched.secret is None and fetched.description == "svc-a"
    second = await relay.create_subscription("http://127.0.0.1:9/other")
    assert [s.id async for s in relay.list_subscriptions(limit=1)] == [second.id, created.id]

    changed = await relay.update_subscription(created.id, enabled=False, description="paused")
    assert not changed.enabled and changed.description == "paused"
    assert changed.events == ["task.succeeded"]  # untouched

    rotated = await relay.rotate_secret(created.id)
    assert rotated.secret and rotated.secret != created.secret

    with pytest.raises(ValidationError) as invalid:
        await relay.create_subscription("http://127.0.0.1:9/x", models=["nope"])
    assert [e.loc for e in invalid.value.errors] == ["/models/0"]

    await relay.delete_subscription(created.id)
    with pytest.raises(NotFound):
        await relay.get_subscription(created.id)


@dataclass
class VerifyingReceiver:
    """A service's webhook endpoint: verifies each request, dedupes on the event id."""

    secret: str = ""
    fail_with: int | None = None
    events: dict[str, Event] = field(default_factory=dict)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    rejected: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append((body, dict(request.headers)))
        try:
            event = verify_webhook(body, request.headers, self.secret)
        except WebhookVerificationError:
            self.rejected += 1
            return web.Response(status=400)
        if self.fail_with:
            return web.Response(status=self.fail_with)
        self.events.setdefault(event.id, event)
        return web.Response(status=204)


async def test_real_deliveries_verify_and_the_event_feed_matches(
    start_relay, client_key: str
) -> None:
    api = await start_relay(
        roles="api,poller,dispatcher",
        dispatch_idle_poll_s="50ms",
        webhook_retry_schedule="50ms",
    )
    receiver = VerifyingReceiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with AsyncRelayClient(base_url(api), client_key) as relay:
            subscription = await relay.create_subscription(str(server.make_url("/hooks")))
            assert subscription.secret
            receiver.secret = subscription.secret
            task = await relay.submit(MODEL, SAMPLE_INPUT, metadata={"order_id": "B-2"})

            async def finished() -> bool:
                return any(e.type == "task.succeeded" for e in receiver.events.values())

            await wait_for(finished, timeout=15)
            delivered = sorted(receiver.events.values(), key=lambda e: e.timestamp)
            assert [e.type for e in delivered] == [
                "task.queued",
                "task.processing",
                "task.succeeded",
            ]
            assert {e.data.id for e in delivered} == {task.id}
            assert delivered[-1].data.status == "succeeded" and delivered[-1].data.output
            assert delivered[-1].data.metadata == {"order_id": "B-2"}
            assert receiver.rejected == 0

            # The feed serves the same bodies, oldest first, across pages.
            feed = relay.events(limit=1)
            assert [e async for e in feed] == delivered
            assert feed.resume_after == delivered[-1].id
            # Resuming from the last event id: nothing new yet; from the first: the rest.
            assert [e async for e in relay.events(after=feed.resume_after)] == []
            rest = [e.id async for e in relay.events(after=delivered[0].id)]
            assert rest == [e.id for e in delivered[1:]]
            succeeded = [e.id async for e in relay.events(types=["task.succeeded"])]
            assert succeeded == [delivered[-1].id]

            deliveries = await relay.task_deliveries(task.id)
            assert {d.status for d in deliveries} == {"succeeded"} and len(deliveries) == 3
            assert all(d.attempts and d.attempts[0].status_code == 204 for d in deliveries)
            listed = [d.id async for d in relay.list_deliveries(task_id=task.id, limit=2)]
            assert sorted(listed) == sorted(d.id for d in deliveries)

            # A tampered body, or a malformed signature header, is rejected.
            body, headers = receiver.raw[-1]
            assert verify_webhook(body, headers, subscription.secret).id == delivered[-1].id
            with pytest.raises(WebhookVerificationError):
                verify_webhook(body.replace(b"succeeded", b"failed"), headers, subscription.secret)
            for bad in ("garbage", "v1,!!!not-base64", ""):
                with pytest.raises(WebhookVerificationError):
                    verify_webhook(body, {**headers, "webhook-signature": bad}, subscription.secret)
            wrong_secret = (await relay.rotate_secret(subscription.id)).secret
            assert wrong_secret
            # The old signature alone does not verify with the new secret.
            with pytest.raises(WebhookVerificationError):
                verify_webhook(body, headers, wrong_secret)

            # A delivery that died is sent again on request, with the same event id.
            receiver.secret = wrong_secret
            receiver.fail_with = 500
            second = await relay.submit(MODEL, SAMPLE_INPUT)

            async def dead() -> list[Any]:
                found = await relay.task_deliveries(second.id)
                return [d for d in found if d.status == "dead"]

            (died, *_) = await wait_for(dead, timeout=15)
            receiver.fail_with = None
            retried = await relay.retry_delivery(died.id)
            assert retried.id == died.id and retried.event_id == died.event_id
            assert retried.status != "dead"

            async def redelivered() -> bool:
                return died.event_id in receiver.events

            await wait_for(redelivered, timeout=10)

            async def succeeded_now() -> bool:
                return (await relay.get_delivery(died.id)).status == "succeeded"

            await wait_for(succeeded_now, timeout=10)
            with pytest.raises(Conflict):
                await relay.retry_delivery(deliveries[0].id)  # succeeded: nothing to retry
    finally:
        await server.close()


async def test_sync_event_feed_resumes_from_the_last_event_id(
    relay: AsyncRelayClient, relay_app: TestClient, client_key: str, store
) -> None:
    # task.queued events are written as upstream accepts each submission (api role only).
    tasks = [await relay.submit(MODEL, SAMPLE_INPUT) for _ in range(3)]

    def consume() -> tuple[list[str], str | None, list[str]]:
        with RelayClient(base_url(relay_app), client_key) as client:
            feed = client.events(limit=2)
            first_two = [e.data.id for e in itertools.islice(feed, 2)]
            later = [e.data.id for e in client.events(after=feed.resume_after)]
            return first_two, feed.resume_after, later

    first_two, resume_after, later = await asyncio.to_thread(consume)
    assert first_two + later == [t.id for t in tasks]
    assert resume_after and resume_after.startswith("evt_")


async def test_503_raises_service_unavailable_and_requests_carry_the_user_agent() -> None:
    """503 problem+json (the relay's database-outage answer) raises ServiceUnavailable."""
    import mindvideo_relay

    agents: list[str] = []

    async def outage(request: web.Request) -> web.Response:
        agents.append(request.headers["User-Agent"])
        return web.json_response(
            {"type": "about:blank", "title": "Service unavailable", "status": 503, "detail": "db"},
            status=503,
            headers={"Retry-After": "120"},
            content_type="application/problem+json",
        )

    app = web.Application()
    app.router.add_get("/v1/tasks/{id}", outage)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with AsyncRelayClient(str(server.make_url("")).rstrip("/"), "rk_x") as relay:
            # Retry-After beyond what the client waits for: the caller gets the error at once.
            with pytest.raises(ServiceUnavailable) as unavailable:
                await relay.get_task("tsk_1")
        assert unavailable.value.retry_after == 120 and unavailable.value.detail == "db"
        assert unavailable.value.status == 503 and unavailable.value.title == "Service unavailable"
    finally:
        await server.close()
    version = (
        f"mindvideo-relay-client/{mindvideo_relay.__version__} python-httpx/{httpx.__version__}"
    )
    assert agents == [version]
