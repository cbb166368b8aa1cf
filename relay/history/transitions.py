"""Recording what happens to a task: the single place where a status change is written.

Every status change (from submission, the resubmitter, the poller) goes through
`record_task_outcomes`, which in ONE transaction updates the task rows, appends history
and writes the webhook outbox (event + one delivery per matching subscriber). A status
change and its webhooks therefore commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.core import metrics
from relay.core.ids import new_id
from relay.core.payloads import iso, task_json, webhook_body
from relay.core.store import OUTBOX_CHANNEL, Db
from relay.core.vocabulary import EVENT_TYPES, TERMINAL_STATUSES
from relay.history.chain import GENESIS, entry_hash, normalise_json, shown_time


@dataclass(frozen=True)
class NewHistoryEntry:
    """One line of a task's audit history, before it has an id and a seq."""

    type: str
    source: str
    dedupe_key: str
    from_status: str | None = None
    to_status: str | None = None
    upstream_event: dict[str, Any] | None = None

    @classmethod
    def status_change(cls, from_status: str | None, to_status: str, source: str) -> NewHistoryEntry:
        """The task entered `to_status`; recorded once per status per task."""
        return cls(f"task.{to_status}", source, f"status:{to_status}", from_status, to_status)


@dataclass
class TaskOutcome:
    """The new state of one task plus what to append to its history."""

    task_id: str
    status: str
    cost_estimate: float | None
    cost_actual: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    upstream_task_id: str | None = None
    upstream_request_id: str | None = None
    entries: list[NewHistoryEntry] = field(default_factory=list)
    changed: bool = True
    poll_interval_s: float | None = None
    poll_delay_s: float | None = None
    # Poll bookkeeping (None: leave as stored): the estimated start of the current status,
    # when upstream's status was read, whether events were fetched, the events retry count,
    # and how many upstream requests this step spent.
    phase_started_at: datetime | None = None
    looked_at: datetime | None = None
    events_fetched: bool = False
    events_retries: int | None = None
    requests: int = 0
    # Upstream answered 404 for the task (True), read its status (False), or neither (None).
    upstream_missing: bool | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **changes: Any) -> TaskOutcome:
        """Start from the stored task and apply `changes`."""
        base = {
            "task_id": row["id"],
            "status": row["status"],
            "cost_estimate": row["cost_estimate"],
            "cost_actual": row["cost_actual"],
            "output": row["output"],
            "error": row["error"],
            "poll_interval_s": row["poll_interval_s"],
        }
        return cls(**{**base, **changes})


class HistoryConflict(Exception):
    """History for these tasks was written concurrently; this write must be retried."""

    def __init__(self, task_ids: list[str]) -> None:
        super().__init__(f"history written concurrently for {', '.join(task_ids)}")
        self.task_ids = task_ids


async def _chain(db: Db, history: list[dict[str, Any]]) -> None:
    """Give each new entry its prev_hash and hash, chaining onto the task's stored last entry.

    The task rows are locked by the update before this runs, so no other writer can append
    to these chains until the transaction ends.
    """
    firsts: dict[str, dict[str, Any]] = {}
    for item in history:
        firsts.setdefault(item["task_id"], item)
    # Only tasks that already have entries need a look-up (a new task's chain starts here).
    heads = [
        {"task_id": task_id, "seq": e["seq"], "task_created_at": e["task_created_at"]}
        for task_id, e in firsts.items()
        if e["seq"] > 1
    ]
    previous: dict[str, str] = {}
    if heads:
        rows = await db.fetch("history_chain_before", heads=heads)
        previous = {r["task_id"]: r["hash"] for r in rows}
    for item in history:
        prev_hash = previous.get(item["task_id"], GENESIS)
        shown = {**item, "created_at": iso(item["created_at"])}
        item["prev_hash"] = prev_hash
        item["hash"] = previous[item["task_id"]] = entry_hash(item["task_id"], shown, prev_hash)


def _snapshot(task: dict[str, Any], status: str, final_status: str) -> dict[str, Any]:
    """The task as it was when it entered `status` (earlier steps of one poll lack results)."""
    if status == final_status:
        return task
    snapshot = {**task, "status": status}
    if status not in TERMINAL_STATUSES:
        snapshot.update(cost_actual=None, output=None, error=None, completed_at=None)
    return snapshot


async def record_task_outcomes(
    db: Db, owner: str | None, outcomes: list[TaskOutcome]
) -> list[Mapping[str, Any]]:
    """Apply outcomes, append history, write the outbox. Call inside `store.transaction()`.

    Only tasks whose lease is still held by `owner` (None: unleased) change; the others
    were taken over and are skipped. Returns the updated task rows.
    """
    if not outcomes:
        return []
    rows = await db.fetch(
        "apply_task_updates",
        owner=owner,
        updates=[
            {
                "id": o.task_id,
                "status": o.status,
                "upstream_task_id": o.upstream_task_id,
                "upstream_request_id": o.upstream_request_id,
                "cost_estimate": o.cost_estimate,
                "cost_actual": o.cost_actual,
                "output": o.output,
                "error": o.error,
                "changed": o.changed or bool(o.entries),
                "new_events": len(o.entries),
                "poll_interval_s": o.poll_interval_s,
                "poll_delay_s": o.poll_delay_s,
                "phase_started_at": o.phase_started_at,
                "looked_at": o.looked_at,
                "events_fetched": o.events_fetched,
                "events_retries": o.events_retries,
                "requests": o.requests,
                "upstream_missing": o.upstream_missing,
            }
            for o in outcomes
        ],
    )
    updated = {row["id"]: row for row in rows}
    # One time for every entry of this write, as the API will show it (milliseconds): the
    # hash covers it, so it is the relay's, not the database's DEFAULT.
    recorded_at = shown_time(datetime.now(UTC))
    history: list[dict[str, Any]] = []
    for outcome in outcomes:
        row = updated.get(outcome.task_id)
        if row is None or not outcome.entries:
            continue
        first_seq = row["event_seq"] - len(outcome.entries) + 1
        for offset, entry in enumerate(outcome.entries):
            history.append(
                {
                    "id": new_id("evt"),
                    "task_id": outcome.task_id,
                    "task_created_at": row["created_at"],
                    "seq": first_seq + offset,
                    "type": entry.type,
                    "from_status": entry.from_status,
                    "to_status": entry.to_status,
                    "source": entry.source,
                    "upstream_event": normalise_json(entry.upstream_event),
                    "dedupe_key": entry.dedupe_key,
                    "created_at": recorded_at,
                }
            )
    if not history:
        return rows
    await _chain(db, history)
    inserted = {r["id"] for r in await db.fetch("insert_history", entries=history)}
    if len(inserted) < len(history):
        # A concurrent writer recorded some of these first: a chain with holes would read as
        # tampering, so nothing of this write is kept; the caller's next pass retries.
        raise HistoryConflict(sorted({e["task_id"] for e in history if e["id"] not in inserted}))
    now = datetime.now(UTC)
    outbox: list[dict[str, Any]] = []
    for item in history:
        if item["id"] not in inserted:
            continue
        if item["to_status"] is not None and item["type"] in EVENT_TYPES:
            metrics.STATUS_CHANGES.labels(item["to_status"]).inc()
            row = updated[item["task_id"]]
            data = _snapshot(task_json(row), item["to_status"], row["status"])
            outbox.append(
                {
                    "id": item["id"],
                    "task_id": item["task_id"],
                    "task_created_at": item["task_created_at"],
                    "client_id": row["client_id"],
                    "type": item["type"],
                    "payload": webhook_body(item["id"], item["type"], now, data),
                    "ord": len(outbox),
                }
            )
    if outbox:
        await db.fetch("insert_webhook_events", events=outbox)
        deliveries = await db.fetch("insert_deliveries", event_ids=[e["id"] for e in outbox])
        if deliveries:
            await db.execute("notify_outbox", channel=OUTBOX_CHANNEL)
    return rows


async def record_history_note(db: Db, task_id: str, entry: NewHistoryEntry) -> Mapping[str, Any]:
    """Append an entry that changes no status (a cancel request) to a task's history.

    It takes the next seq under the task's row lock, like `record_task_outcomes`, and is
    timed and chained the same way (so `relay audit verify` holds across it); it leaves the
    poll schedule and lease alone and sends no webhook (it is no status change).
    Returns the stored entry; its dedupe key must be unique for the task.
    """
    task = await db.fetchrow("take_history_seq", task_id=task_id)
    assert task is not None, f"history note for {task_id}, which does not exist"
    item: dict[str, Any] = {
        "id": new_id("evt"),
        "task_id": task_id,
        "task_created_at": task["created_at"],
        "seq": task["event_seq"],
        "type": entry.type,
        "from_status": entry.from_status,
        "to_status": entry.to_status,
        "source": entry.source,
        "upstream_event": normalise_json(entry.upstream_event),
        "dedupe_key": entry.dedupe_key,
        "created_at": shown_time(datetime.now(UTC)),
    }
    await _chain(db, [item])
    row = await db.fetchrow(
        "insert_history_note",
        id=item["id"],
        task_id=task_id,
        task_created_at=item["task_created_at"],
        seq=item["seq"],
        type=item["type"],
        from_status=item["from_status"],
        to_status=item["to_status"],
        source=item["source"],
        upstream_event=item["upstream_event"],
        dedupe_key=item["dedupe_key"],
        created_at=item["created_at"],
        prev_hash=item["prev_hash"],
        hash=item["hash"],
    )
    assert row is not None, f"history note {entry.dedupe_key!r} of {task_id} recorded twice"
    return row
