"""Clients and their API keys: keys created once, stored hashed, added and revoked one by one.

A client is the tenant (its tasks, subscriptions, signing secret); keys are how it signs in.
Rotating a key is `add` then `revoke --key`: the client, and everything it owns, stays.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from relay.core.errors import Conflict, NotFound
from relay.core.store import Store

# 32 random bytes: a key cannot be guessed, so a plain sha256 (not a slow KDF) protects it
# at rest and lets authentication be one indexed lookup per request.
_KEY_BYTES = 32
# Standard Webhooks asks for 24 to 64 bytes of secret; 32 matches HMAC-SHA256's block use.
_SECRET_BYTES = 32
# "rk_" and 8 characters (48 bits): enough to tell a client's keys apart when revoking one,
# far too little to help guess the other 35 characters.
KEY_PREFIX_LENGTH = 11
# last_used_at is written at most this often per key: "last used" to the minute is what an
# operator needs, and a write per request would turn every read into a write.
LAST_USED_RESOLUTION_S = 60.0

Role = Literal["client", "admin", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True)
class Client:
    """An authenticated caller of the API, and the key it used."""

    id: int
    name: str
    role: Role = "client"
    key_prefix: str | None = None

    @property
    def is_admin(self) -> bool:
        """Sees every client's resources and may change them."""
        return self.role == "admin"

    @property
    def is_auditor(self) -> bool:
        """Reads every client's resources and changes nothing."""
        return self.role == "auditor"

    @property
    def can_write(self) -> bool:
        """May create, change or delete (every role but the auditor)."""
        return self.role != "auditor"

    @property
    def scope(self) -> int | None:
        """The client id that limits what this caller sees (None: admin or auditor, all)."""
        return None if self.role in ("admin", "auditor") else self.id

    @property
    def may_read_audit_log(self) -> bool:
        """Whether this caller may read the action log: admins and auditors."""
        return self.role in ("admin", "auditor")


def hash_key(key: str) -> bytes:
    """What is stored for an API key."""
    return hashlib.sha256(key.encode()).digest()


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def _new_key() -> str:
    return "rk_" + secrets.token_urlsafe(_KEY_BYTES)


async def create_client(
    store: Store, name: str, *, admin: bool = False, role: Role | None = None
) -> tuple[str, str]:
    """Create a client with one key; returns (api_key, signing_secret), shown only now.

    `admin=True` is the older spelling of `role="admin"`.
    """
    role = role or ("admin" if admin else "client")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = _new_key()
    secret = new_signing_secret()
    async with store.transaction() as db:
        row = await db.fetchrow("insert_client", name=name, signing_secret=secret, role=role)
        if row is None:
            raise Conflict(
                f"a client named {name!r} already exists; "
                f"`relay keys add {name}` gives it another key"
            )
        await db.fetchrow(
            "insert_client_key",
            client_id=row["id"],
            key_hash=hash_key(key),
            key_prefix=key[:KEY_PREFIX_LENGTH],
        )
    return key, secret


async def _client_id(store: Store, name: str) -> int:
    row = await store.fetchrow("get_client_by_name", name=name)
    if row is None:
        raise NotFound(f"client {name!r}")
    return int(row["id"])


async def add_key(store: Store, name: str) -> str:
    """A new API key for an existing client (its tasks and subscriptions stay its own)."""
    client_id = await _client_id(store, name)
    key = _new_key()
    await store.fetchrow(
        "insert_client_key",
        client_id=client_id,
        key_hash=hash_key(key),
        key_prefix=key[:KEY_PREFIX_LENGTH],
    )
    return key


async def list_keys(store: Store) -> list[dict[str, Any]]:
    """Every client with each of its keys: prefix and dates, never a key or a secret."""
    return [dict(r) for r in await store.fetch("list_client_keys")]


async def revoke_keys(store: Store, name: str, prefix: str | None = None) -> list[str]:
    """Revoke one live key of a client (by its prefix) or all of them; the revoked prefixes.

    Raises NotFound when the client, or a live key with that prefix, does not exist, and
    Conflict when the prefix matches more than one live key (give more characters).
    """
    client_id = await _client_id(store, name)
    async with store.transaction() as db:
        live = await db.fetch("live_client_keys", client_id=client_id)
        if prefix is not None:
            live = [k for k in live if k["key_prefix"].startswith(prefix)]
            if len(live) > 1:
                raise Conflict(
                    f"{len(live)} live keys of {name!r} start with {prefix!r}; give more of it"
                )
        if not live:
            which = f" starting with {prefix!r}" if prefix is not None else ""
            raise NotFound(f"live key of client {name!r}{which}")
        rows = await db.fetch("revoke_client_keys", ids=[k["id"] for k in live])
    return [r["key_prefix"] for r in rows]


async def revoke_client(store: Store, name: str) -> bool:
    """Revoke every live key of a client; False when it has none (or does not exist)."""
    try:
        await revoke_keys(store, name)
    except NotFound:
        return False
    return True


async def rotate_signing_secret(
    store: Store, client_id: int, overlap_s: float
) -> tuple[str, datetime]:
    """A new signing secret for the client's per-task webhooks; returns it and the time
    until which the old one still signs too (dual signatures, like a subscription's)."""
    secret = new_signing_secret()
    until = datetime.now(UTC) + timedelta(seconds=overlap_s)
    row = await store.fetchrow(
        "rotate_client_secret", id=client_id, secret=secret, previous_secret_until=until
    )
    if row is None:
        raise NotFound("client")
    return secret, row["previous_signing_secret_until"]


async def rotate_signing_secret_by_name(
    store: Store, name: str, overlap_s: float
) -> tuple[str, datetime]:
    """`rotate_signing_secret` for the client with this name."""
    return await rotate_signing_secret(store, await _client_id(store, name), overlap_s)


async def authenticate(store: Store, key: str) -> Client | None:
    """The client owning a live key, or None; notes the key's use (at most once a minute)."""
    if not key.startswith("rk_"):
        return None
    row = await store.fetchrow(
        "authenticate_client", key_hash=hash_key(key), touch_after_s=LAST_USED_RESOLUTION_S
    )
    if row is None:
        return None
    if not row["recently_used"]:
        await store.execute(
            "touch_client_key", id=row["key_id"], touch_after_s=LAST_USED_RESOLUTION_S
        )
    return Client(row["id"], row["name"], row["role"], row["key_prefix"])
