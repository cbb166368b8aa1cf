"""Standard Webhooks signatures: HMAC-SHA256 over "{id}.{timestamp}.{body}".

The secret is `whsec_` + base64 of the key bytes; the signature header carries one
`v1,<base64>` per valid secret, space-separated, so a receiver in the middle of a rotation
accepts either. https://www.standardwebhooks.com/
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SIGNATURE_VERSION = "v1"
# Standard Webhooks' recommended tolerance: a captured request cannot be replayed later.
DEFAULT_TOLERANCE_S = 300


class InvalidSecret(ValueError):
    """The secret is not `whsec_` + base64."""


class InvalidSignature(ValueError):
    """A webhook failed verification (bad signature, missing header, stale timestamp)."""


@functools.lru_cache(maxsize=4096)  # decoded on every attempt; a process sees few secrets
def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the base64-decoded bytes after the prefix)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a signing secret is whsec_ followed by base64") from None
    if not key:
        raise InvalidSecret("a signing secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a webhook."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    # The one-shot C implementation: no HMAC object per signature.
    digest = hmac.digest(secret_key(secret), signed, "sha256")
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Check a received webhook against one secret; raise InvalidSignature when it fails.

    `headers` may use any case. For receivers the relay itself runs (the demo).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp_text and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    expected = sign(secret, msg_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split()):
        raise InvalidSignature("no signature matches the secret")
