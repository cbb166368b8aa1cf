"""The client's pure parts: packaging, webhook verification inputs, retry decisions.

Nothing here needs a relay; the behaviour against a real one is tested in the server's
tests/integration/test_python_client.py.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import httpx
import mindvideo_relay
import pytest
import standardwebhooks
from mindvideo_relay import WebhookVerificationError, verify_webhook
from mindvideo_relay._core import Call, RetryPolicy, error_from_response, retry_after_seconds

PACKAGE = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
BODY = json.dumps(
    {
        "id": "evt_1",
        "type": "task.succeeded",
        "timestamp": "2026-11-23T12:00:05.000Z",
        "data": {
            "id": "tsk_1",
            "model": "kling-video-o1",
            "status": "succeeded",
            "created_at": "2026-11-23T12:00:00.000Z",
            "updated_at": "2026-11-23T12:00:05.000Z",
            "completed_at": "2026-11-23T12:00:05.000Z",
            "output": {"video_url": "https://cdn.example/v.mp4"},
            "owner": "a field a later relay adds",
        },
    }
)


def signed_headers(body: str, *, secret: str = SECRET, at: datetime | None = None) -> dict:
    """Headers as the relay sends them, signed by the Standard Webhooks library itself."""
    when = at or datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign("evt_1", when, body)
    return {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def test_the_package_depends_on_httpx_and_standardwebhooks_only() -> None:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
    assert names == {"httpx", "standardwebhooks"}
    # One place for the version: the module, which the installed metadata reports too.
    assert project["dynamic"] == ["version"]
    assert version("mindvideo-relay-client") == mindvideo_relay.__version__


def test_verify_webhook_returns_the_typed_event_from_any_header_mapping() -> None:
    headers = signed_headers(BODY)
    for mapping in (headers, {k.title(): v for k, v in headers.items()}, httpx.Headers(headers)):
        event = verify_webhook(BODY.encode(), mapping, SECRET)
        assert event.id == "evt_1" and event.type == "task.succeeded"
        assert event.data.status == "succeeded" and event.data.is_terminal
        assert event.data.raw["owner"] == "a field a later relay adds"
        assert event.timestamp == datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    assert verify_webhook(BODY, headers, SECRET).id == "evt_1"  # str bodies too


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "garbage"},
        {"webhook-signature": "v1,%%%"},
        {"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()},
        {"webhook-timestamp": "not-a-number"},
        {"webhook-id": ""},
    ],
)
def test_malformed_or_wrong_headers_fail_verification(change: dict) -> None:
    headers = {**signed_headers(BODY), **change}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, headers, SECRET)


def test_old_timestamps_tampered_bodies_and_unsigned_non_events_fail() -> None:
    old = signed_headers(BODY, at=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(BODY, old, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY.replace("succeeded", "failed"), signed_headers(BODY), SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(b"\xff\xfe", signed_headers(BODY), SECRET)
    # Signed, but not an event body: still refused, as a verification failure.
    with pytest.raises(WebhookVerificationError, match="not a relay event"):
        verify_webhook('{"hello": 1}', signed_headers('{"hello": 1}'), SECRET)


def test_a_secret_that_is_not_a_signing_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="signing secret"):
        verify_webhook(BODY, signed_headers(BODY), "whsec_")


def test_problem_answers_become_typed_errors_with_field_errors() -> None:
    request = httpx.Request("POST", "http://relay/v1/tasks")
    problem = {
        "type": "https://mindvideo-relay.internal/problems/validation",
        "title": "Validation failed",
        "status": 422,
        "detail": "the request is invalid",
        "errors": [{"loc": "/input/duration", "message": "must be 5 or 10"}],
    }
    error = error_from_response(httpx.Response(422, json=problem, request=request))
    assert isinstance(error, mindvideo_relay.ValidationError)
    assert (error.status, error.title, error.detail) == (
        422,
        "Validation failed",
        problem["detail"],
    )
    assert [(e.loc, e.message) for e in error.errors] == [("/input/duration", "must be 5 or 10")]
    html = error_from_response(httpx.Response(502, text="<h1>bad gateway</h1>", request=request))
    assert isinstance(html, mindvideo_relay.ServerError) and "bad gateway" in html.detail
    assert type(error_from_response(httpx.Response(418, request=request))) is (
        mindvideo_relay.RelayError
    )


def test_only_safe_calls_are_retried_and_retry_after_is_honoured() -> None:
    policy = RetryPolicy(max_retries=2)
    safe = Call("GET", "/v1/tasks", lambda r: r, retryable=True)
    unsafe = Call("POST", "/v1/subscriptions/sub_1/rotate-secret", lambda r: r)
    busy = httpx.Response(429, headers={"Retry-After": "3"})
    assert policy.after_answer(safe, 0, busy) == 3
    assert policy.after_answer(unsafe, 0, busy) is None
    assert policy.after_answer(safe, 2, busy) is None  # retries spent
    assert policy.after_answer(safe, 0, httpx.Response(404)) is None
    assert policy.after_answer(safe, 0, httpx.Response(503, headers={"Retry-After": "600"})) is None
    delays = [policy.after_error(safe, n) for n in range(3)]
    assert delays[2] is None and 0 < delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0
    http_date = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 < retry_after_seconds(httpx.Response(503, headers={"Retry-After": http_date})) <= 30
