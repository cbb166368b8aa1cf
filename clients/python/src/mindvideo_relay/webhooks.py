"""verify_webhook: check a webhook request's Standard Webhooks signature, return its event.

The signature check is the `standardwebhooks` library's (the reference implementation of
the scheme the relay signs with); this module only adapts its inputs and its errors.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

import standardwebhooks

from mindvideo_relay.errors import WebhookVerificationError
from mindvideo_relay.models import Event


def _verifier(secret: str) -> standardwebhooks.Webhook:
    try:
        return standardwebhooks.Webhook(secret)
    except (binascii.Error, ValueError, standardwebhooks.webhooks.EmptyWebhookSecretError) as exc:
        # A wrong secret is the receiver's configuration, not the sender's fault: say so
        # instead of rejecting every webhook as if each were forged.
        raise ValueError("secret is not a webhook signing secret (whsec_<base64>)") from exc


def verify_webhook(body: bytes | str, headers: Mapping[str, Any], secret: str) -> Event:
    """The event of a webhook request whose signature verifies with `secret`.

    `body` is the raw request body, exactly as received (parse it only after this check);
    `headers` any mapping of the request's headers (aiohttp, Starlette, Flask/Werkzeug or a
    dict; names in any case). Raises WebhookVerificationError when a header is missing or
    malformed, the timestamp is more than 5 minutes away from now, no `v1` signature matches
    (during a secret rotation the relay sends one per secret; either matching is enough), or
    the body is not an event. Receivers should answer such requests 400 or 401, and dedupe
    verified ones on `event.id` (the `webhook-id`, the same on every retry).
    """
    verifier = _verifier(secret)
    flat = {str(name).lower(): str(value) for name, value in headers.items()}
    try:
        verifier.verify(body, flat, json_parse=False)
    except standardwebhooks.WebhookVerificationError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    except ValueError as exc:
        # The library raises ValueError (bad base64, a signature without a version, a body
        # that is not UTF-8) on malformed input: just as unverified as a wrong signature.
        raise WebhookVerificationError(f"malformed webhook request: {exc}") from exc
    try:
        event = Event.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookVerificationError(f"the signed body is not a relay event: {exc}") from exc
    if event.id != flat["webhook-id"]:
        raise WebhookVerificationError("the body's id is not the webhook-id header")
    return event
