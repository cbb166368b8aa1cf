"""`relay demo`: the whole product on one machine, with nothing to configure.

An embedded Postgres (unless RELAY_DATABASE_URL is set), the MindVideo simulator, the relay
with every role, and a local receiver that verifies each webhook's signature. It submits a
few tasks and prints each webhook and each task's history as they happen.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from relay.cli.localdev import embedded_postgres, free_port
from relay.core.config import Settings
from relay.core.egress import Network
from relay.delivery.signing import InvalidSignature, verify
from relay.upstream.simulator import SimulatorConfig, create_simulator_app

DEMO_DIR = Path(".demo")
SIM_KEY = "sim-demo-key"
PROMPTS = [
    "A cinematic skyline at golden hour, premium film look, natural camera movement",
    "A paper boat drifting down a rainy street, macro lens",
    "Timelapse of a desert night sky, slow dolly forward",
    "A red fox walking through fresh snow, soft morning light",
]


def verify_signature(secret: str, headers: Any, body: bytes) -> bool:
    """Standard Webhooks verification (the standardwebhooks library when installed)."""
    try:
        from standardwebhooks import Webhook
    except ImportError:
        try:
            verify(secret, headers, body, now=time.time())
        except InvalidSignature:
            return False
        return True
    try:
        Webhook(secret).verify(body, dict(headers))
    except Exception:
        return False
    return True


def _say(text: str) -> None:
    print(text, flush=True)


class Receiver:
    """A local webhook receiver: verifies, dedupes on webhook-id, prints."""

    def __init__(self) -> None:
        self.secret = ""
        self.seen: set[str] = set()
        self.app = web.Application()
        self.app.router.add_post("/hooks", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        """One webhook delivery."""
        body = await request.read()
        ok = verify_signature(self.secret, request.headers, body)
        event = json.loads(body)
        duplicate = request.headers.get("webhook-id") in self.seen
        self.seen.add(request.headers.get("webhook-id", ""))
        mark = "signature ok" if ok else "SIGNATURE INVALID"
        task = event["data"]
        _say(
            f"  webhook  {event['type']:<16} {task['id']}  [{mark}]"
            + ("  (duplicate, ignored)" if duplicate else "")
        )
        return web.Response(status=204 if ok else 400)


async def _start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _allow_loopback(deny: tuple[Network, ...]) -> tuple[Network, ...]:
    """The deny list without loopback: the demo's receiver listens on 127.0.0.1."""
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    return tuple(
        n for n in deny if not any(n.version == lo.version and n.overlaps(lo) for lo in loopback)
    )


async def _demo(settings: Settings, tasks: int, task_duration: float) -> int:
    from relay.app import create_app
    from relay.core.store import Store, migrate
    from relay.identity.clients import create_client

    assert settings.database_url
    await migrate(settings.database_url)
    store = await Store.open(settings.database_url, size=2)
    key, _ = await create_client(store, f"demo-{int(time.time())}")
    await store.close()

    sim_port, receiver_port, relay_port = free_port(), free_port(), free_port()
    sim_config = SimulatorConfig(api_key=SIM_KEY, task_duration_s=task_duration)
    runners = [await _start(create_simulator_app(sim_config), sim_port)]
    receiver = Receiver()
    runners.append(await _start(receiver.app, receiver_port))
    relay_settings = settings.model_copy(
        update={
            "upstream_url": f"http://127.0.0.1:{sim_port}",
            "upstream_api_key": SecretStr(SIM_KEY),
            "roles": ("api", "poller", "dispatcher"),
            "poll_interval_min_s": 0.5,
            "poll_interval_max_s": 2.0,
            "webhook_deny_cidrs": _allow_loopback(settings.webhook_deny_cidrs),
        }
    )
    runners.append(await _start(create_app(relay_settings), relay_port))
    base = f"http://127.0.0.1:{relay_port}"
    headers = {"Authorization": f"Bearer {key}"}
    _say(f"relay      {base}   (simulator :{sim_port}, receiver :{receiver_port})")
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            resp = await http.post(
                f"{base}/v1/subscriptions",
                json={"url": f"http://127.0.0.1:{receiver_port}/hooks", "description": "demo"},
            )
            subscription = await resp.json()
            if resp.status != 201:
                _say(f"could not subscribe: {subscription}")
                return 1
            receiver.secret = subscription["secret"]
            _say(f"subscribed {subscription['id']} -> receiver (every event type)")
            ids = []
            for n in range(tasks):
                body = {
                    "model": "kling-video-o1",
                    "input": {"prompt": PROMPTS[n % len(PROMPTS)], "duration": 5, "mode": "pro"},
                    "metadata": {"demo": n + 1},
                }
                resp = await http.post(
                    f"{base}/v1/tasks", json=body, headers={"Idempotency-Key": f"demo-{n}"}
                )
                task = await resp.json()
                ids.append(task["id"])
                _say(f"submitted  {task['id']}  -> {resp.status} {task['status']}")
            bad = await http.post(
                f"{base}/v1/tasks", json={"model": "kling-video-o1", "input": {"duration": 7}}
            )
            problem = await bad.json()
            _say(f"invalid    -> {bad.status} {[e['loc'] for e in problem.get('errors', [])]}")
            deadline = time.monotonic() + task_duration * 4 + 30
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                for task_id in sorted(pending):
                    task = await (await http.get(f"{base}/v1/tasks/{task_id}")).json()
                    if task["completed_at"]:
                        pending.discard(task_id)
                        await _print_history(http, base, task)
            # Let the last webhooks land before shutting down.
            await asyncio.sleep(1.5)
            if pending:
                _say(f"timed out waiting for {sorted(pending)}")
                return 1
            _say(f"done: {len(ids)} tasks, {len(receiver.seen)} webhooks verified")
            return 0
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _print_history(http: aiohttp.ClientSession, base: str, task: dict[str, Any]) -> None:
    events = (await (await http.get(f"{base}/v1/tasks/{task['id']}/events")).json())["data"]
    _say(f"finished   {task['id']}  {task['status']}  cost={task['cost_actual']}")
    for entry in events:
        event = entry["upstream_event"] or {}
        if entry["to_status"]:
            change = f"{entry['from_status'] or '-'} -> {entry['to_status']}"
        elif "progress" in event:
            change = f"progress {event['progress']}%"
        else:
            change = str(event.get("status", ""))
        _say(f"    #{entry['seq']:<2} {entry['type']:<24} {entry['source']:<8} {change}")


def run_demo(settings: Settings, *, tasks: int = 3, task_duration: float = 6.0) -> int:
    """Run the demo; returns the exit code."""
    if settings.database_url:
        return asyncio.run(_demo(settings, tasks, task_duration))
    DEMO_DIR.mkdir(exist_ok=True)
    _say("starting an embedded Postgres in .demo/pg ...")
    with embedded_postgres(DEMO_DIR / "pg", keep=True) as url:
        return asyncio.run(
            _demo(settings.model_copy(update={"database_url": url}), tasks, task_duration)
        )
