"""Console sessions: an API key exchanged for a cookie, checked again on every request."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from relay.core.errors import Forbidden
from relay.core.store import Store
from relay.identity import clients
from relay.identity.clients import Client

COOKIE_NAME = "relay_console"
CSRF_HEADER = "X-CSRF-Token"
# A working day: long enough not to sign an operator out mid-incident, short enough that a
# forgotten browser does not stay signed in for good (sign out or revoking the key ends it
# sooner).
SESSION_LIFETIME_S = 12 * 3600
# 32 random bytes (256 bits) for the cookie and for the CSRF token: neither can be guessed.
_TOKEN_BYTES = 32
# Methods that change nothing need no CSRF token (SameSite=Strict already keeps the cookie
# off cross-site requests; the token is the second lock on the ones that change state).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who it is and the token its state-changing requests repeat."""

    client: Client
    csrf_token: str
    expires_at: datetime


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _client_from_row(row: object) -> Client:
    # The query names its columns after Client's fields, so a change of Client (roles, key
    # prefixes) needs only the query to follow it.
    names = row.keys()  # type: ignore[attr-defined]
    return Client(**{f.name: row[f.name] for f in dataclasses.fields(Client) if f.name in names})  # type: ignore[index]


async def create_session(store: Store, key: str) -> tuple[str, Session] | None:
    """Sign in with an API key: (cookie token, session), or None for an unknown key."""
    client = await clients.authenticate(store, key)
    if client is None:
        return None
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    csrf = secrets.token_urlsafe(_TOKEN_BYTES)
    await store.execute("purge_console_sessions")
    row = await store.fetchrow(
        "insert_console_session",
        token_hash=_token_hash(token),
        client_id=client.id,
        key_hash=clients.hash_key(key),
        key_prefix=key[:11],
        csrf_token=csrf,
        lifetime_s=float(SESSION_LIFETIME_S),
    )
    assert row is not None
    return token, Session(client, csrf, row["expires_at"])


async def find_session(store: Store, token: str) -> Session | None:
    """The live session of a cookie token (expired, signed out or key revoked: None)."""
    if not token or len(token) > 100:
        return None
    row = await store.fetchrow("console_session_client", token_hash=_token_hash(token))
    if row is None:
        return None
    return Session(_client_from_row(row), row["csrf_token"], row["expires_at"])


async def delete_session(store: Store, token: str) -> None:
    """Sign out: the cookie token stops working at once."""
    await store.execute("delete_console_session", token_hash=_token_hash(token))


def csrf_matches(request: web.Request, session: Session) -> bool:
    """Whether the request repeats the session's CSRF token (compared in constant time)."""
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), session.csrf_token.encode())


async def client_from_cookie(store: Store, request: web.Request) -> Client | None:
    """The client of the request's console cookie, or None when there is no live session.

    A request that changes state must also carry X-CSRF-Token: without it, 403.
    """
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    session = await find_session(store, token)
    if session is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_matches(request, session):
        raise Forbidden(f"a console request that changes something needs the {CSRF_HEADER} header")
    return session.client
