"""Console routes: the page and its assets, sign in and out, and two JSON summaries."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from relay.core import metrics
from relay.core.errors import FieldError, InvalidRequest, NotFound, Unauthorized
from relay.core.payloads import iso
from relay.http.common import json_response, read_body
from relay.http.openapi import documented
from relay.identity import sessions
from relay.keys import CLIENT, SETTINGS, STORE

routes = web.RouteTableDef()
STATIC_DIR = Path(__file__).parent / "static"
# Every asset the page may load, and its type; nothing else under /console/static answers.
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ASSETS = {
    path.name: _ASSET_TYPES[path.suffix]
    for path in sorted(STATIC_DIR.iterdir())
    if path.suffix in _ASSET_TYPES
}
# Only our own files run; no inline script or style; never framed (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Subscription health looks back one day.
HEALTH_WINDOW_S = 24 * 3600


class SessionCreate(BaseModel):
    """`POST /console/session`: the API key to sign in with."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200, description="an API key (rk_...)")


class SessionInfo(BaseModel):
    """Who the console is signed in as, and the token its changes must repeat."""

    client: str
    role: str = Field(description="client, admin or auditor")
    key_prefix: str | None
    csrf_token: str = Field(description="send as X-CSRF-Token on every POST, PATCH, DELETE")
    expires_at: str


class SubscriptionHealth(BaseModel):
    """One subscription's deliveries over the last day and its newest failure."""

    subscription_id: str
    attempts: int
    succeeded: int
    success_rate: float | None = Field(description="succeeded / attempts; null without attempts")
    last_status_code: int | None
    last_error: str | None
    last_response_excerpt: str | None
    last_error_at: str | None


class SubscriptionHealthList(BaseModel):
    """`GET /console/api/subscription-health`."""

    data: list[SubscriptionHealth]


class UpstreamSummary(BaseModel):
    """`GET /console/api/upstream`: this replica's upstream counters and the shared gauges."""

    at: float = Field(description="server time (Unix seconds) of the counters")
    ceiling_rps: float
    requests: dict[str, float] = Field(description="requests by endpoint since start")
    codes: dict[str, float] = Field(description="requests by outcome code since start")
    auth_failing: bool
    detection_count: float
    detection_mean_s: float | None
    detection_p95_s: float | None = Field(
        description="upper bucket bound holding the 95th percentile; null past the last bucket"
    )
    in_flight: dict[str, int]
    outbox_pending: int
    outbox_oldest_age_s: float


def _role(client: Any) -> str:
    return str(client.role)


def _secure(request: web.Request) -> bool:
    """Whether the browser reached us over TLS (directly or through a TLS-ending proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _session_info(session: sessions.Session) -> dict[str, Any]:
    return {
        "client": session.client.name,
        "role": _role(session.client),
        "key_prefix": getattr(session.client, "key_prefix", None),
        "csrf_token": session.csrf_token,
        "expires_at": iso(session.expires_at),
    }


@routes.get("/console")
@documented("The console page", {200: None}, auth=False, content_type="text/html")
async def console_page(request: web.Request) -> web.Response:
    """The single page; everything else it loads is under /console/static."""
    return web.Response(
        body=(STATIC_DIR / "index.html").read_bytes(), content_type="text/html", charset="utf-8"
    )


@routes.get("/console/static/{name}")
@documented(
    "A console asset (script, style sheet or icon)",
    {200: None},
    auth=False,
    errors=(404,),
    content_type="text/javascript",
)
async def console_asset(request: web.Request) -> web.Response:
    """One file of the console's allowlist; any other name is 404."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound("asset")
    return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=ASSETS[name])


@routes.post("/console/session")
@documented(
    "Sign in to the console with an API key (sets an HttpOnly session cookie)",
    {201: SessionInfo},
    body=SessionCreate,
    auth=False,
    errors=(401,),
)
async def sign_in(request: web.Request) -> web.Response:
    """Exchange an API key for a session cookie; the key is not kept by the browser."""
    # A cross-site HTML form cannot send JSON, and a cross-site fetch sending JSON needs a
    # preflight we never grant: so no other site can sign a browser in (login CSRF).
    if request.content_type != "application/json":
        raise InvalidRequest(
            "send the key as application/json",
            [FieldError("/headers/Content-Type", "must be application/json")],
            status=400,
        )
    body = await read_body(request, SessionCreate)
    created = await sessions.create_session(request.app[STORE], body.key.strip())
    if created is None:
        raise Unauthorized("unknown or revoked API key")
    token, session = created
    response = json_response(_session_info(session), status=201)
    response.set_cookie(
        sessions.COOKIE_NAME,
        token,
        max_age=sessions.SESSION_LIFETIME_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return response


@routes.get("/console/session")
@documented(
    "The console session of this browser (401 when signed out)",
    {200: SessionInfo},
    auth=False,
    errors=(401,),
)
async def current_session(request: web.Request) -> web.Response:
    """Who is signed in, and the CSRF token the page keeps in memory only."""
    session = await sessions.find_session(
        request.app[STORE], request.cookies.get(sessions.COOKIE_NAME, "")
    )
    if session is None:
        raise Unauthorized("not signed in to the console")
    return json_response(_session_info(session))


@routes.delete("/console/session")
@documented("Sign out of the console", {204: None}, auth=False)
async def sign_out(request: web.Request) -> web.Response:
    """End this browser's session (with its CSRF token) and clear the cookie."""
    store = request.app[STORE]
    token = request.cookies.get(sessions.COOKIE_NAME, "")
    session = await sessions.find_session(store, token)
    if session is not None:
        if not sessions.csrf_matches(request, session):
            raise web.HTTPForbidden(reason="signing out needs the X-CSRF-Token header")
        await sessions.delete_session(store, token)
    response = web.Response(status=204)
    response.del_cookie(sessions.COOKIE_NAME, path="/")
    return response


@routes.get("/console/api/subscription-health")
@documented(
    "Each visible subscription's success rate over the last day and its newest failure",
    {200: SubscriptionHealthList},
)
async def subscription_health(request: web.Request) -> web.Response:
    """Health at a glance, for the subscriptions the caller may see."""
    rows = await request.app[STORE].fetch(
        "subscription_health", scope=request[CLIENT].scope, window_s=float(HEALTH_WINDOW_S)
    )
    data = [
        {
            "subscription_id": r["subscription_id"],
            "attempts": r["attempts"],
            "succeeded": r["succeeded"],
            "success_rate": r["succeeded"] / r["attempts"] if r["attempts"] else None,
            "last_status_code": r["last_status_code"],
            "last_error": r["last_error"],
            "last_response_excerpt": r["last_response_excerpt"],
            "last_error_at": iso(r["last_error_at"]),
        }
        for r in rows
    ]
    return json_response({"data": data})


def _samples(metric: Any, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    """(labels, value) of a prometheus_client metric's samples named <name><suffix>."""
    found = []
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix:
                found.append((sample.labels, sample.value))
    return found


def _detection() -> tuple[float, float | None, float | None]:
    """Count, mean and bucket-estimated p95 of the detection window, all statuses together."""
    total = sum(v for _, v in _samples(metrics.DETECTION_WINDOW, "_sum"))
    count = sum(v for _, v in _samples(metrics.DETECTION_WINDOW, "_count"))
    buckets: dict[float, float] = {}
    for labels, value in _samples(metrics.DETECTION_WINDOW, "_bucket"):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    p95 = None
    if count:
        p95 = next((b for b in sorted(buckets) if buckets[b] >= 0.95 * count), None)
        if p95 is not None and math.isinf(p95):  # past the largest bucket: JSON has no inf
            p95 = None
    return count, (total / count if count else None), p95


@routes.get("/console/api/upstream")
@documented(
    "Upstream at a glance (admin): requests and codes since start, detection delay, "
    "in-flight tasks by status",
    {200: UpstreamSummary},
    errors=(404,),
)
async def upstream_summary(request: web.Request) -> web.Response:
    """Admins and auditors: what this replica sent upstream and the shared gauges."""
    if request[CLIENT].scope is not None:  # admins and auditors see the whole deployment
        raise NotFound("upstream summary (admin keys only)")
    store = request.app[STORE]
    requests: dict[str, float] = {}
    codes: dict[str, float] = {}
    for labels, value in _samples(metrics.UPSTREAM_REQUESTS, "_total"):
        requests[labels["endpoint"]] = requests.get(labels["endpoint"], 0.0) + value
        codes[labels["code"]] = codes.get(labels["code"], 0.0) + value
    count, mean, p95 = _detection()
    in_flight = {"queued": 0, "processing": 0}
    for row in await store.fetch("tasks_in_flight"):
        in_flight[row["status"]] = row["n"]
    outbox = await store.fetchrow("outbox_stats")
    auth_failing = _samples(metrics.UPSTREAM_AUTH_FAILING)
    return json_response(
        {
            "at": time.time(),
            "ceiling_rps": request.app[SETTINGS].upstream_max_rps,
            "requests": requests,
            "codes": codes,
            "auth_failing": bool(auth_failing and auth_failing[0][1]),
            "detection_count": count,
            "detection_mean_s": mean,
            "detection_p95_s": p95,
            "in_flight": in_flight,
            "outbox_pending": outbox["pending"] if outbox else 0,
            "outbox_oldest_age_s": outbox["oldest_age_s"] if outbox else 0.0,
        }
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the console's pages and answers get a strict CSP and no caching."""
    if not request.path.startswith("/console"):
        return
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


def setup(app: web.Application) -> None:
    """Register the console on the relay's application (api role)."""
    app.add_routes(routes)
    app.on_response_prepare.append(security_headers)
