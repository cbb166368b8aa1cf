"""Operational routes (no auth): liveness, readiness, metrics."""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from relay.core import metrics
from relay.core.store import NOT_MIGRATED, SchemaBehind, check_schema, database_problem
from relay.http.openapi import documented
from relay.http.schemas import Health, Readiness
from relay.keys import SETTINGS, STORE, UPSTREAM

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)


@routes.get("/healthz")
@documented("Liveness", {200: Health}, auth=False)
async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
@documented(
    "Readiness: database, schema version (and upstream auth for pods without the api role)",
    {200: Readiness, 503: Readiness},
    auth=False,
)
async def readyz(request: web.Request) -> web.Response:
    """200 when the database answers and the schema is current (and, without the api role,
    upstream accepts our key).

    A refused upstream key is reported in `checks` by every role, but only a pod without the
    api role turns unready on it: taking the API out of the Service would stop reads and
    the event feed too, which work without upstream. For the api role it is an alert
    (relay_upstream_auth_failing, the `upstream_auth_refused` log line), not unreadiness.
    """
    checks: dict[str, str] = {}
    # The same words the CLI prints, so an operator reading either knows what to fix.
    try:
        await check_schema(request.app[STORE])
        checks["database"] = checks["schema"] = "ok"
    except SchemaBehind as exc:
        checks["database"] = "ok"
        checks["schema"] = f"at {exc.version}, expected {exc.expected}: run `relay migrate`"
    except Exception as exc:
        problem = database_problem(exc)
        if problem == NOT_MIGRATED:
            checks["database"], checks["schema"] = "ok", problem
        else:
            reason = problem or f"error {type(exc).__name__}"
            checks["database"] = f"unavailable: RELAY_DATABASE_URL: {reason}"
    upstream = request.app.get(UPSTREAM)
    checks["upstream_auth"] = (
        "failing: upstream refuses RELAY_UPSTREAM_API_KEY"
        if upstream is not None and upstream.auth_failing
        else "ok"
    )
    gating = dict(checks)
    if "api" in request.app[SETTINGS].roles:
        gating.pop("upstream_auth")
    ready = all(value == "ok" for value in gating.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
@documented("Prometheus metrics", {200: None}, auth=False, content_type="text/plain")
async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text; the database-derived gauges are read now."""
    store = request.app[STORE]
    try:
        counts = {r["status"]: r["n"] for r in await store.fetch("tasks_in_flight")}
        for status in ("queued", "processing"):
            metrics.TASKS_IN_FLIGHT.labels(status).set(counts.get(status, 0))
        outbox = await store.fetchrow("outbox_stats")
        assert outbox is not None  # an aggregate: always one row
        metrics.OUTBOX_PENDING.set(outbox["pending"])
        metrics.OUTBOX_OLDEST_AGE.set(outbox["oldest_age_s"])
    except Exception as exc:
        log.warning("metrics_gauges_unavailable", error=type(exc).__name__)
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
