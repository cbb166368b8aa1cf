"""create_app(settings): routes, middlewares and one cleanup context per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from relay.console import routes as console_routes
from relay.core import json_codec, tracing
from relay.core.config import Settings
from relay.core.egress import create_webhook_session
from relay.core.loops import Loop
from relay.core.runtime import Runtime
from relay.core.store import Store, check_schema
from relay.delivery.dispatcher import Dispatcher, DispatcherSettings
from relay.delivery.subscriptions import WebhookService
from relay.history.janitor import Janitor
from relay.http import audit as audit_routes
from relay.http import clients as client_routes
from relay.http import models as model_routes
from relay.http import openapi, ops
from relay.http import tasks as task_routes
from relay.http import webhooks as webhook_routes
from relay.http.middlewares import authenticate, problems, request_context
from relay.intake.catalog import ModelCatalog
from relay.intake.resubmitter import Resubmitter
from relay.intake.tasks import SUBMIT_LEASE_MARGIN_S, TaskService
from relay.keys import (
    BUDGET,
    CATALOG,
    DISPATCH_STORE,
    DURATIONS,
    HTTP_SESSION,
    RUNTIME,
    SETTINGS,
    STORE,
    TASKS,
    UPSTREAM,
    WEBHOOK_SESSION,
    WEBHOOKS,
)
from relay.polling.durations import DurationModel
from relay.polling.poller import Poller, PollerSettings
from relay.upstream.budget import UpstreamBudget
from relay.upstream.client import UpstreamClient

# Contract: a body over 1 MiB is answered 413 before it is parsed.
MAX_BODY_BYTES = 1024 * 1024
# One pooled ClientSession serves upstream calls; bounded so a slow upstream cannot
# exhaust sockets, generous enough for the poller's concurrency.
UPSTREAM_CONNECTIONS = 256
# The dispatcher's own connections: one claim and a few completions of batches in flight
# at a time (more would only queue in Postgres).
DISPATCH_POOL_SIZE = 4


def create_app(settings: Settings) -> web.Application:
    """The relay as an aiohttp application; roles decide which loops start with it."""
    # Before the application exists: the aiohttp server instrumentation applies to
    # applications created after it (a no-op unless the otel extra and OTEL_* ask for it).
    tracing.setup()
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[request_context, problems, authenticate],
    )
    app[SETTINGS] = settings
    app[CATALOG] = ModelCatalog(
        extra_dir=settings.model_schemas_dir, unknown_models=settings.unknown_models
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_upstream)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_loops)
    app.add_routes(ops.routes)
    app.add_routes(openapi.routes)
    if "api" in settings.roles:
        # Before the task routes: /v1/tasks/export must not match /v1/tasks/{task_id}.
        app.add_routes(audit_routes.routes)
        app.add_routes(task_routes.routes)
        app.add_routes(webhook_routes.routes)
        app.add_routes(client_routes.routes)
        app.add_routes(model_routes.routes)
        console_routes.setup(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.database_url:
        raise RuntimeError("RELAY_DATABASE_URL is not set")
    store = await Store.open(settings.database_url, size=settings.db_pool_size)
    try:
        # Serving an unmigrated database would only fail every request and every loop tick:
        # refuse to start instead, and the CLI says to run `relay migrate`.
        await check_schema(store)
    except BaseException:
        await store.close()
        raise
    app[STORE] = store
    # The dispatcher claims and completes on connections of its own that keep one plan
    # per statement (Store.open: generic_plans); nothing else runs on them.
    dispatch_store = None
    if "dispatcher" in settings.roles:
        try:
            dispatch_store = await Store.open(
                settings.database_url, size=DISPATCH_POOL_SIZE, generic_plans=True
            )
        except BaseException:
            await store.close()
            raise
        app[DISPATCH_STORE] = dispatch_store
    yield
    if dispatch_store is not None:
        await dispatch_store.close()
    await app[STORE].close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS, ttl_dns_cache=300),
        json_serialize=json_codec.dumps,
    )
    app[HTTP_SESSION] = session
    app[BUDGET] = UpstreamBudget(app[STORE], rate=settings.upstream_max_rps)
    app[DURATIONS] = DurationModel(app[STORE])
    app[UPSTREAM] = UpstreamClient(
        session,
        settings.upstream_url,
        settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None,
        budget=app[BUDGET],
        timeout_s=settings.upstream_timeout_s,
    )
    # Webhooks leave through their own session: no redirects, resolved-address checks.
    app[WEBHOOK_SESSION] = create_webhook_session(settings)
    yield
    await app[WEBHOOK_SESSION].close()
    await session.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[TASKS] = TaskService(
        app[STORE],
        app[UPSTREAM],
        app[CATALOG],
        budget=app[BUDGET],
        submit_lease_s=settings.upstream_timeout_s + SUBMIT_LEASE_MARGIN_S,
        poll_interval_min_s=settings.poll_interval_min_s,
        webhook_deny_cidrs=settings.webhook_deny_cidrs,
    )
    app[WEBHOOKS] = WebhookService(
        app[STORE],
        webhook_deny_cidrs=settings.webhook_deny_cidrs,
        secret_rotation_overlap_s=settings.secret_rotation_overlap_s,
    )
    yield


async def _loops(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    loops: dict[str, Loop] = {
        "resubmitter": Resubmitter(
            app[STORE], app[TASKS], app[BUDGET], upstream_timeout_s=settings.upstream_timeout_s
        ),
        "poller": Poller(
            app[STORE],
            app[UPSTREAM],
            PollerSettings.from_settings(settings),
            budget=app[BUDGET],
            durations=app[DURATIONS],
        ),
        "dispatcher": Dispatcher(
            app.get(DISPATCH_STORE) or app[STORE],
            app[WEBHOOK_SESSION],
            DispatcherSettings.from_settings(settings),
        ),
        "janitor": Janitor(
            app[STORE],
            retention_days=settings.retention_days,
            checkpoint_interval_s=settings.audit_checkpoint_interval_s,
        ),
    }
    active = set()
    if "poller" in settings.roles:
        active |= {"resubmitter", "poller", "janitor"}
    if "dispatcher" in settings.roles:
        active.add("dispatcher")
    runtime = Runtime(loops, active=active, grace_s=settings.shutdown_grace_s)
    app[RUNTIME] = runtime
    runtime.start()
    yield
    await runtime.stop()
