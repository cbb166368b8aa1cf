"""Who did what: the append-only action log and its reader.

Every change a client or an operator asks for is recorded once, by `record_action`, in the
transaction of the change where there is one. The database refuses to change or delete a
recorded action. Admins read the log through `GET /v1/audit-log` (`list_actions`).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.core.errors import FieldError, Forbidden, InvalidRequest
from relay.core.pagination import keyset_page
from relay.core.payloads import iso
from relay.core.store import Db
from relay.identity.clients import Client

# The actions the relay records, spelled once. Other modules record theirs with these names
# (or add a name here); the log itself accepts any name, so a new action needs no migration.
TASK_CREATED = "task.created"
TASK_CANCEL_REQUESTED = "task.cancel_requested"
DELIVERY_RETRIED = "delivery.retried"
DELIVERIES_BULK_RETRIED = "deliveries.bulk_retried"
SUBSCRIPTION_CREATED = "subscription.created"
SUBSCRIPTION_UPDATED = "subscription.updated"
SUBSCRIPTION_DELETED = "subscription.deleted"
SUBSCRIPTION_SECRET_ROTATED = "subscription.secret_rotated"  # noqa: S105 - a name, no secret
SUBSCRIPTION_RECOVERED = "subscription.recovered"
CLIENT_CREATED = "client.created"
CLIENT_KEY_ADDED = "client.key_added"
CLIENT_KEY_REVOKED = "client.key_revoked"
CLIENT_SECRET_ROTATED = "client.secret_rotated"  # noqa: S105 - a name, no secret

ACTIONS: tuple[str, ...] = (
    TASK_CREATED,
    TASK_CANCEL_REQUESTED,
    DELIVERY_RETRIED,
    DELIVERIES_BULK_RETRIED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_DELETED,
    SUBSCRIPTION_SECRET_ROTATED,
    SUBSCRIPTION_RECOVERED,
    CLIENT_CREATED,
    CLIENT_KEY_ADDED,
    CLIENT_KEY_REVOKED,
)

# Action ids come from relay_new_id('act'): 12 hex digits of milliseconds, 20 random ones.
ACTION_CURSOR = re.compile(r"^act_[0-9a-f]{32}$")
# The command line's actor when the operating system cannot name its user (a container
# running as an unnamed uid).
CLI_ACTOR = "cli"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a client through the API (key prefix, request id) or the command line."""

    name: str
    key_prefix: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, client: Client, request_id: str | None = None) -> Actor:
        """A client acting through the API with one of its keys."""
        return cls(client.name, client.key_prefix, request_id)

    @classmethod
    def cli(cls) -> Actor:
        """The command line, named after the operating-system user running it."""
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry for the uid
            return cls(CLI_ACTOR)
        return cls(f"{CLI_ACTOR}:{user}")


async def record_action(
    db: Db,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Append one action to the log; returns its id.

    Call it with the transaction (`db`) that makes the change, so the change and its
    record commit together; where the change has no transaction, right after it.
    `details` must never hold a secret: the log is read by people auditing the relay.
    """
    row = await db.fetchrow(
        "insert_action",
        actor=actor.name,
        actor_key_prefix=actor.key_prefix,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=actor.request_id,
        details=dict(details or {}),
    )
    assert row is not None
    return row["id"]


def action_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of `GET /v1/audit-log`."""
    return {
        "id": row["id"],
        "at": iso(row["at"]),
        "actor": row["actor"],
        "actor_key_prefix": row["actor_key_prefix"],
        "action": row["action"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "request_id": row["request_id"],
        "details": row["details"],
    }


def require_audit_reader(client: Client) -> None:
    """Forbidden unless the caller may read everyone's actions."""
    if not client.may_read_audit_log:
        raise Forbidden("the audit log is readable with an admin key only")


async def list_actions(
    db: Db,
    client: Client,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    from_at: datetime | None = None,
    to_at: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the action log, newest first, and the next page's cursor (or None)."""
    require_audit_reader(client)
    if cursor is not None and not ACTION_CURSOR.match(cursor):
        raise InvalidRequest(
            "invalid cursor",
            [FieldError("/query/cursor", "expected a next_cursor value from this endpoint")],
        )
    rows = await db.fetch(
        "list_actions",
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        from_at=from_at,
        to_at=to_at,
        cursor=cursor,
        limit=limit + 1,
    )
    return keyset_page(rows, limit)
