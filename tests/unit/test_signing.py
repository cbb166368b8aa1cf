"""Standard Webhooks signing agrees with the reference libraries."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix.webhooks

from relay.delivery.signing import (
    InvalidSecret,
    InvalidSignature,
    secret_key,
    sign,
    verify,
    webhook_headers,
)
from relay.identity.clients import new_signing_secret

BODY = b'{"id":"evt_1","type":"task.succeeded","data":{"id":"tsk_1"}}'
MSG_ID = "evt_01jabcdefghjkmnpqrstvwxyz0"


def test_signature_matches_the_standardwebhooks_library() -> None:
    secret = new_signing_secret()
    timestamp = 1_763_899_200
    expected = standardwebhooks.Webhook(secret).sign(
        MSG_ID, datetime.fromtimestamp(timestamp, UTC), BODY.decode()
    )
    assert sign(secret, MSG_ID, timestamp, BODY) == expected


def test_headers_verify_with_standardwebhooks_and_svix() -> None:
    secret = new_signing_secret()
    headers = webhook_headers([secret], MSG_ID, int(time.time()), BODY)
    assert headers["webhook-id"] == MSG_ID
    assert standardwebhooks.Webhook(secret).verify(BODY, headers)["id"] == "evt_1"
    svix.webhooks.Webhook(secret).verify(BODY, headers)


def test_one_signature_per_secret_and_each_secret_verifies() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    headers = webhook_headers([new, old], MSG_ID, int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(BODY, headers)
        verify(secret, headers, BODY, now=time.time())


def test_verify_refuses_tampering_other_secrets_and_stale_timestamps() -> None:
    secret = new_signing_secret()
    now = time.time()
    headers = webhook_headers([secret], MSG_ID, int(now), BODY)
    verify(secret, {k.upper(): v for k, v in headers.items()}, BODY, now=now)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, BODY + b" ", now=now)
    with pytest.raises(InvalidSignature):
        verify(new_signing_secret(), headers, BODY, now=now)
    with pytest.raises(InvalidSignature):
        verify(secret, {**headers, "webhook-id": "evt_other"}, BODY, now=now)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, BODY, now=now + 3600)
    with pytest.raises(InvalidSignature, match="missing"):
        verify(secret, {"webhook-id": MSG_ID}, BODY, now=now)


def test_new_secrets_are_whsec_base64_of_at_least_24_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) >= 24
    assert secret_key(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert new_signing_secret() != secret


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(InvalidSecret):
        secret_key("whsec_not base64!")
    with pytest.raises(InvalidSecret):
        secret_key("whsec_")


def test_a_cached_secret_still_refuses_a_bad_secret_every_time() -> None:
    from relay.delivery.signing import InvalidSecret, secret_key

    for _ in range(2):  # failures are not cached as successes
        with pytest.raises(InvalidSecret):
            secret_key("whsec_not base64!")
