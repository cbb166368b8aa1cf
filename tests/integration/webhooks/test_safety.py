"""Targets in denied networks are never called, whether named or given as an IP literal."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import deliver_all, subscribe, task_deliveries
from tests.receiver import Receiver

# The receiver listens on loopback; denying loopback makes it a forbidden target.
DENY_LOOPBACK = "127.0.0.0/8,::1/128"


async def test_denied_network_is_never_called_by_name_or_literal_address(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    # "localhost" goes through DNS resolution; 127.0.0.1 is an IP literal.
    await subscribe(relay_app, client, receiver.url("/by-name", host="localhost"))
    dispatcher = dispatchers.make(webhook_deny_cidrs=DENY_LOOPBACK, webhook_retry_schedule="1ms")
    task = await submit_task(relay_app, client, webhook_url=receiver.url("/by-literal"))

    await deliver_all(dispatcher)

    assert receiver.requests == []
    deliveries = await task_deliveries(relay_app, client, task["id"])
    assert len(deliveries) == 2
    for delivery in deliveries:
        assert delivery["status"] == "dead"
        assert delivery["last_status_code"] is None
        assert all(a["error"].startswith("denied:") for a in delivery["attempts"])
        assert "RELAY_WEBHOOK_DENY_CIDRS" in delivery["last_error"]


async def test_allowed_addresses_are_called_while_others_are_denied(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(webhook_deny_cidrs="10.0.0.0/8,169.254.0.0/16")
    await submit_task(relay_app, client)
    assert await dispatcher.run_once() == 1
    assert len(receiver.requests) == 1


@pytest.fixture
async def self_signed_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, str]]:
    """A receiver behind HTTPS with a self-signed certificate; yields it and its URL."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await proc.wait() == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    receiver = Receiver()
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield receiver, f"https://127.0.0.1:{port}/hooks"
    finally:
        await runner.cleanup()


async def test_https_certificates_are_verified(
    relay_app: TestClient,
    new_client,
    self_signed_receiver: tuple[Receiver, str],
    dispatchers: Dispatchers,
) -> None:
    receiver, url = self_signed_receiver
    client = await new_client()
    await subscribe(relay_app, client, url)
    task = await submit_task(relay_app, client)
    await dispatchers.make(webhook_retry_schedule="1h").run_once()

    assert receiver.requests == []
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    assert delivery["status"] == "failed"
    assert "certificate" in delivery["last_error"].lower()


async def test_the_unspecified_address_is_denied_with_loopback(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    # Dialling 0.0.0.0 reaches the receiver on 127.0.0.1: it must count as loopback.
    client = await new_client()
    dispatcher = dispatchers.make(webhook_deny_cidrs=DENY_LOOPBACK, webhook_retry_schedule="1ms")
    target = receiver.url("/x", host="0.0.0.0")
    task = await submit_task(relay_app, client, webhook_url=target)

    await deliver_all(dispatcher)

    assert receiver.requests == []
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    assert delivery["status"] == "dead"
    assert "RELAY_WEBHOOK_DENY_CIDRS" in delivery["last_error"]
