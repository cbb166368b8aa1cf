"""Client API keys: created once, stored hashed, revoked at once."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from relay.errors import Conflict
from relay.store import Store

# 32 random bytes: a key cannot be guessed, so a plain sha256 (not a slow KDF) protects it
# at rest and lets authentication be one indexed lookup per request.
_KEY_BYTES = 32
# Standard Webhooks asks for 24 to 64 bytes of secret; 32 matches HMAC-SHA256's block use.
_SECRET_BYTES = 32


@dataclass(frozen=True)
class Client:
    """An authenticated caller of the API."""

    id: int
    name: str
    is_admin: bool
    # The first characters of the key this request used (recorded in the action log).
    key_prefix: str | None = None

    @property
    def scope(self) -> int | None:
        """The client id that limits what this caller sees (None: an admin sees all)."""
        return None if self.is_admin else self.id

    @property
    def may_read_audit_log(self) -> bool:
        """Whether this caller may read the action log (admins; auditors once they exist)."""
        return self.is_admin


def hash_key(key: str) -> bytes:
    """What is stored for an API key."""
    return hashlib.sha256(key.encode()).digest()


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


async def create_client(store: Store, name: str, *, admin: bool = False) -> tuple[str, str]:
    """Create a client; returns (api_key, signing_secret), the only time either is shown."""
    key = "rk_" + secrets.token_urlsafe(_KEY_BYTES)
    secret = new_signing_secret()
    row = await store.fetchrow(
        "insert_client",
        name=name,
        key_hash=hash_key(key),
        key_prefix=key[:7],
        signing_secret=secret,
        is_admin=admin,
    )
    if row is None:
        raise Conflict(f"a client named {name!r} already exists")
    return key, secret


async def list_clients(store: Store) -> list[dict[str, Any]]:
    """Clients without keys or secrets."""
    return [dict(r) for r in await store.fetch("list_clients")]


async def revoke_client(store: Store, name: str) -> bool:
    """Revoke a client's key; False when no active client has that name."""
    return await store.fetchrow("revoke_client", name=name) is not None


async def authenticate(store: Store, key: str) -> Client | None:
    """The client owning an active key, or None."""
    if not key.startswith("rk_"):
        return None
    row = await store.fetchrow("authenticate_client", key_hash=hash_key(key))
    return Client(row["id"], row["name"], row["is_admin"], row["key_prefix"]) if row else None
