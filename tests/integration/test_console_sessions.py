"""The console's server side: session cookies, CSRF, headers and its two JSON summaries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from relay.console.routes import CONTENT_SECURITY_POLICY
from relay.core.store import Store
from relay.identity.sessions import COOKIE_NAME, CSRF_HEADER
from tests.helpers import TASK, auth, read_problem, submit_task

NewClient = Callable[..., Awaitable[dict[str, str]]]


async def sign_in(api: TestClient, key: str, **headers: str) -> tuple[str, dict[str, Any], Any]:
    """POST /console/session; returns (cookie token, session body, the Set-Cookie morsel)."""
    resp = await api.post("/console/session", json={"key": key}, headers=headers)
    assert resp.status == 201, await resp.text()
    morsel = resp.cookies[COOKIE_NAME]
    return morsel.value, await resp.json(), morsel


def cookie(token: str) -> dict[str, str]:
    """A Cookie header carrying only the console session (no Authorization)."""
    return {"Cookie": f"{COOKIE_NAME}={token}"}


async def test_session_cookie_is_httponly_strict_and_secure_only_behind_tls(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    _, body, morsel = await sign_in(relay_app, client["key"])
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP on loopback: a Secure cookie would be dropped
    assert body["role"] == "client" and body["csrf_token"]
    assert client["key"] not in str(body)
    _, _, behind_tls = await sign_in(relay_app, client["key"], **{"X-Forwarded-Proto": "https"})
    assert behind_tls["secure"] is True


async def test_cookie_reads_the_api_as_its_client_and_only_its_client(
    relay_app: TestClient, new_client: NewClient
) -> None:
    alice, bob = await new_client(), await new_client()
    task = await submit_task(relay_app, alice)
    token, _, _ = await sign_in(relay_app, bob["key"])
    relay_app.session.cookie_jar.clear()
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=cookie(token))
    await read_problem(resp, 404)
    resp = await relay_app.get("/v1/tasks", headers=cookie(token))
    assert resp.status == 200 and (await resp.json())["data"] == []
    token, _, _ = await sign_in(relay_app, alice["key"])
    relay_app.session.cookie_jar.clear()
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=cookie(token))
    assert resp.status == 200


async def test_a_change_without_the_csrf_token_is_refused(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    token, body, _ = await sign_in(relay_app, client["key"])
    relay_app.session.cookie_jar.clear()
    resp = await relay_app.post("/v1/tasks", json=TASK, headers=cookie(token))
    problem = await read_problem(resp, 403)
    assert CSRF_HEADER in problem["detail"]
    resp = await relay_app.post(
        "/v1/tasks", json=TASK, headers={**cookie(token), CSRF_HEADER: "not-the-token"}
    )
    await read_problem(resp, 403)
    resp = await relay_app.post(
        "/v1/tasks", json=TASK, headers={**cookie(token), CSRF_HEADER: body["csrf_token"]}
    )
    assert resp.status == 202, await resp.text()


async def test_sign_out_and_revoking_the_key_end_the_session(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client("console-revoked")
    token, body, _ = await sign_in(relay_app, client["key"])
    relay_app.session.cookie_jar.clear()
    assert (await relay_app.get("/console/session", headers=cookie(token))).status == 200
    resp = await relay_app.delete("/console/session", headers=cookie(token))
    assert resp.status == 403  # signing out is a change too: it needs the token
    resp = await relay_app.delete(
        "/console/session", headers={**cookie(token), CSRF_HEADER: body["csrf_token"]}
    )
    assert resp.status == 204
    await read_problem(await relay_app.get("/v1/tasks", headers=cookie(token)), 401)
    await read_problem(await relay_app.get("/console/session", headers=cookie(token)), 401)

    token, _, _ = await sign_in(relay_app, client["key"])
    relay_app.session.cookie_jar.clear()
    assert (await relay_app.get("/v1/tasks", headers=cookie(token))).status == 200
    from relay.identity.clients import revoke_client

    assert await revoke_client(store, "console-revoked")
    await read_problem(await relay_app.get("/v1/tasks", headers=cookie(token)), 401)


async def test_sign_in_refuses_unknown_keys_and_non_json(
    relay_app: TestClient, new_client: NewClient
) -> None:
    resp = await relay_app.post("/console/session", json={"key": "rk_nope"})
    await read_problem(resp, 401)
    assert COOKIE_NAME not in resp.cookies
    client = await new_client()
    # A cross-site form posts urlencoded; only JSON signs in (login CSRF).
    resp = await relay_app.post("/console/session", data={"key": client["key"]})
    problem = await read_problem(resp, 400)
    assert problem["errors"][0]["loc"] == "/headers/Content-Type"
    resp = await relay_app.post("/console/session", json={})
    problem = await read_problem(resp, 422)
    assert problem["errors"][0]["loc"] == "/key"


async def test_console_pages_carry_a_strict_csp_and_only_allowlisted_assets(
    relay_app: TestClient,
) -> None:
    resp = await relay_app.get("/console")
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    html = await resp.text()
    assert "<script>" not in html and "style=" not in html and "http" not in html.lower()
    resp = await relay_app.get("/console/static/app.js")
    assert resp.status == 200 and resp.content_type == "text/javascript"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("index.html", "..%2f..%2fapp.py", "nope.js"):
        await read_problem(await relay_app.get(f"/console/static/{name}"), 404)


async def test_upstream_summary_is_for_admins(relay_app: TestClient, new_client: NewClient) -> None:
    admin, client = await new_client(admin=True), await new_client()
    await submit_task(relay_app, client)
    resp = await relay_app.get("/console/api/upstream", headers=auth(admin))
    assert resp.status == 200
    body = await resp.json()
    assert body["in_flight"]["queued"] == 1
    assert body["requests"]["submit"] >= 1 and body["ceiling_rps"] == 1000
    await read_problem(await relay_app.get("/console/api/upstream", headers=auth(client)), 404)
    await read_problem(await relay_app.get("/console/api/upstream"), 401)


async def test_subscription_health_counts_the_last_day(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client, other = await new_client(), await new_client()
    resp = await relay_app.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hooks"}, headers=auth(client)
    )
    sub = await resp.json()
    resp = await relay_app.get("/console/api/subscription-health", headers=auth(client))
    assert (await resp.json())["data"] == [
        {
            "subscription_id": sub["id"],
            "attempts": 0,
            "succeeded": 0,
            "success_rate": None,
            "last_status_code": None,
            "last_error": None,
            "last_response_excerpt": None,
            "last_error_at": None,
        }
    ]
    resp = await relay_app.get("/console/api/subscription-health", headers=auth(other))
    assert (await resp.json())["data"] == []
