"""The console in a real browser: an operator's and an attacker's view of it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.sync_api import Page, expect

from relay.upstream.simulator import SimulatorState
from tests.browser.browser import Tab
from tests.helpers import auth, submit_task, wait_for
from tests.receiver import Receiver, Reply, running_receiver

NewClient = Callable[..., Awaitable[dict[str, str]]]
# An answer that would run script if the console ever parsed it as HTML.
HOSTILE_HTML = "<img src=x onerror=window.__pwned=1>"
HOSTILE_SCRIPT = "<script>window.__pwned=2</script>"
NOT_DONE = re.compile("queued|processing")
# Quick webhook retries, so a delivery is dead within a second or two.
FULL_RELAY = {
    "roles": "api,poller,dispatcher",
    "dispatch_idle_poll_s": "100ms",
    "webhook_retry_schedule": "50ms,50ms,50ms",
}


def base_url(relay: TestClient) -> str:
    """The relay's http://127.0.0.1:PORT."""
    return str(relay.make_url("")).rstrip("/")


def sign_in(page: Page, base: str, key: str) -> None:
    """Open the console and sign in with `key`; marks the window to detect reloads."""
    page.goto(base + "/console")
    page.fill("#key", key)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-out")).to_be_visible()
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Page) -> bool:
    """Whether the page is still the one sign_in marked."""
    return page.evaluate("window.__notReloaded === true")


def pwned(page: Page) -> Any:
    """What hostile content would have set if it had run."""
    return page.evaluate("window.__pwned")


async def all_deliveries(api: TestClient, client: dict[str, str], status: str) -> list[dict]:
    """Every delivery of the client once all of them (at least one) have `status`."""

    async def reached() -> list[dict] | None:
        resp = await api.get("/v1/deliveries", headers=auth(client))
        data = (await resp.json())["data"]
        return data if data and all(d["status"] == status for d in data) else None

    return await wait_for(reached, timeout=15)


@pytest.fixture
async def receiver() -> Any:
    """A webhook receiver on 127.0.0.1."""
    async with running_receiver() as r:
        yield r


async def test_operator_watches_a_task_finish_retries_dead_deliveries_and_rotates_a_secret(
    start_relay: Callable[..., Awaitable[TestClient]],
    new_client: NewClient,
    sim: SimulatorState,
    receiver: Receiver,
    open_tab: Callable[[str], Awaitable[Tab]],
) -> None:
    relay = await start_relay(**FULL_RELAY)
    client = await new_client("acme-video")
    # The subscriber is down, and what it answers is hostile.
    receiver.default = Reply(status=500, body=HOSTILE_HTML.encode())
    resp = await relay.post(
        "/v1/subscriptions",
        json={"url": receiver.url(), "description": "acme's receiver"},
        headers=auth(client),
    )
    subscription = await resp.json()
    tab = await open_tab(base_url(relay))
    await tab.run(sign_in, tab.base_url, client["key"])
    await tab.run(lambda page: expect(page.locator("#task-list")).to_contain_text("No tasks"))

    task = await submit_task(relay, client, metadata={"order": "A-1001"})
    row = f"tr[data-task-id='{task['id']}'] .badge"
    await tab.run(lambda page: expect(page.locator(row)).to_have_text(NOT_DONE))
    sim.advance(5)  # upstream finishes the task; the poller sees it, the page follows
    await tab.run(lambda page: expect(page.locator(row)).to_have_text("succeeded"))
    assert await tab.run(not_reloaded)
    await tab.run(lambda page: tab.screenshot("tasks"))

    # Every webhook fails until dead; the task page shows each attempt and retries one.
    dead = await all_deliveries(relay, client, "dead")
    receiver.default = Reply(status=204)

    def task_page(page: Page) -> None:
        page.click(f"tr[data-task-id='{task['id']}'] a")
        history = page.locator("#task-history")
        expect(history).to_contain_text("task.queued")
        expect(history).to_contain_text("task.succeeded")
        expect(page.locator("#task-timeline")).to_contain_text("succeeded")
        expect(page.locator("#task-summary")).to_contain_text("A-1001")
        deliveries = page.locator("#task-deliveries")
        expect(deliveries).to_contain_text(HOSTILE_HTML)  # the response excerpt, as text
        expect(deliveries.locator("td", has_text="500").first).to_be_visible()

    await tab.run(task_page)
    await tab.run(lambda page: tab.screenshot("task"))
    first = dead[-1]["id"]  # newest first: the oldest delivery (task.queued) is last

    def retry_first(page: Page) -> None:
        article = page.locator(f"article[data-delivery-id='{first}']")
        article.locator("button.retry").click()
        expect(article.locator("h3 .badge")).to_have_text("succeeded")

    await tab.run(retry_first)
    assert await tab.run(pwned) is None

    # The deliveries page: dead ones first, retry another from there.
    second = dead[0]["id"]

    def deliveries_page(page: Page) -> None:
        page.click("#nav a[href='#/deliveries']")
        first_row = page.locator("#delivery-list tbody tr").first
        expect(first_row.locator(".badge")).to_have_text("dead")
        row = page.locator(f"#delivery-list tr[data-delivery-id='{second}']")
        tab.screenshot("deliveries")
        row.locator("button.retry").click()
        expect(row.locator(".badge")).to_have_text("succeeded")

    await tab.run(deliveries_page)
    assert len(receiver.requests) > len(dead) * 4  # the retries reached the subscriber

    # Subscriptions: health at a glance, then rotate the secret (shown once).
    def rotate(page: Page) -> str:
        page.click("#nav a[href='#/subscriptions']")
        row = page.locator(f"tr[data-subscription-id='{subscription['id']}']")
        expect(row).to_contain_text("% of")
        expect(row).to_contain_text("500")
        row.locator("button.rotate").click()
        secret = page.locator("#new-secret code")
        expect(secret).to_contain_text("whsec_")
        tab.screenshot("subscriptions")
        return secret.inner_text()

    secret = await tab.run(rotate)
    assert secret != subscription["secret"] and secret.startswith("whsec_")

    def sign_out(page: Page) -> int:
        page.click("#sign-out")
        expect(page.locator("#sign-in")).to_be_visible()
        return page.request.get(tab.base_url + "/v1/tasks").status

    assert await tab.run(sign_out) == 401


async def test_hostile_metadata_and_prompts_show_as_text_and_run_nothing(
    relay_app: TestClient, new_client: NewClient, open_tab: Callable[[str], Awaitable[Tab]]
) -> None:
    client = await new_client()
    task = await submit_task(
        relay_app,
        client,
        input={"prompt": HOSTILE_SCRIPT, "duration": 5, "mode": "pro"},
        metadata={"x": HOSTILE_HTML, "y": HOSTILE_SCRIPT, "link": "javascript:alert(1)"},
    )
    tab = await open_tab(base_url(relay_app))
    await tab.run(sign_in, tab.base_url, client["key"])

    def check(page: Page) -> None:
        row = page.locator(f"tr[data-task-id='{task['id']}']")
        expect(row).to_contain_text(HOSTILE_HTML)
        page.click(f"tr[data-task-id='{task['id']}'] a")
        metadata = page.locator("#task-metadata")
        expect(metadata).to_contain_text(HOSTILE_HTML)
        expect(metadata).to_contain_text(HOSTILE_SCRIPT)
        assert page.locator("#view img, #view script, a[href^='javascript']").count() == 0

    await tab.run(check)
    assert await tab.run(pwned) is None


async def test_a_client_cannot_see_another_clients_task_in_the_console(
    relay_app: TestClient, new_client: NewClient, open_tab: Callable[[str], Awaitable[Tab]]
) -> None:
    alice, bob = await new_client("alice"), await new_client("bob")
    task = await submit_task(relay_app, alice)
    tab = await open_tab(base_url(relay_app))
    await tab.run(sign_in, tab.base_url, bob["key"])

    def check(page: Page) -> None:
        expect(page.locator("#task-list")).to_contain_text("No tasks")
        page.goto(f"{tab.base_url}/console#/tasks/{task['id']}")
        expect(page.locator("#task-summary")).to_contain_text("404")
        expect(page.locator("#task-history")).to_be_empty()

    await tab.run(check)


async def test_admin_sees_usage_and_upstream(
    relay_app: TestClient, new_client: NewClient, open_tab: Callable[[str], Awaitable[Tab]]
) -> None:
    admin, client = await new_client("ops", admin=True), await new_client()
    for _ in range(3):
        await submit_task(relay_app, client)
    tab = await open_tab(base_url(relay_app))
    await tab.run(sign_in, tab.base_url, admin["key"])

    def check(page: Page) -> None:
        page.click("#nav a[href='#/usage']")
        expect(page.locator("#usage figure.chart").first).to_contain_text("kling-video-o1")
        assert page.locator("#usage figure.chart rect").count() >= 1
        tab.screenshot("usage")
        page.click("#nav a[href='#/upstream']")
        expect(page.locator("#upstream-in-flight")).to_contain_text("queued: 3")
        expect(page.locator("#upstream-rate")).to_contain_text("/s")
        tab.screenshot("upstream")

    await tab.run(check)
