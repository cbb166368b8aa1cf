"""Export: every task created in a time range with its whole history, as JSON lines or CSV.

The rows come through a server-side cursor in one snapshot and are turned into text a
batch at a time, so an export of millions of history entries holds one batch in memory.
`GET /v1/tasks/export` streams the chunks to the caller; `relay export` writes them to a
file with a progress bar.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO

from relay.core.payloads import history_json, task_json
from relay.core.store import Store

ExportFormat = Literal["jsonl", "csv"]
CONTENT_TYPES: dict[str, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
# Tasks per server-side cursor fetch and per written chunk: a few hundred tasks (a few
# thousand history entries) amortise the round trip and the write while staying small.
EXPORT_BATCH = 500

# CSV: one row per history entry, the task's columns repeated on each (a task without
# history has one row with the entry columns empty). Objects are compact JSON, null is "".
CSV_TASK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("task_id", "id"),
    ("client", "client"),
    ("model", "model"),
    ("status", "status"),
    ("upstream_task_id", "upstream_task_id"),
    ("upstream_request_id", "upstream_request_id"),
    ("cost_estimate", "cost_estimate"),
    ("cost_actual", "cost_actual"),
    ("output", "output"),
    ("error", "error"),
    ("metadata", "metadata"),
    ("webhook_url", "webhook_url"),
    ("webhook_events", "webhook_events"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("completed_at", "completed_at"),
)
# (CSV column, key of a history entry); every key of the entry has a column.
CSV_HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "id"),
    ("event_seq", "seq"),
    ("event_type", "type"),
    ("event_from_status", "from_status"),
    ("event_to_status", "to_status"),
    ("event_source", "source"),
    ("event_upstream_event", "upstream_event"),
    ("event_created_at", "created_at"),
    ("event_prev_hash", "prev_hash"),
    ("event_hash", "hash"),
)
CSV_HEADER: tuple[str, ...] = tuple(c for c, _ in CSV_TASK_COLUMNS + CSV_HISTORY_COLUMNS)


@dataclass(frozen=True)
class ExportRange:
    """Which tasks: created in [created_after, created_before) (None: unbounded), whose."""

    scope: int | None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass
class ExportProgress:
    """How far an export has come (tasks and history entries written, bytes of text)."""

    tasks: int = 0
    entries: int = 0
    chars: int = 0


def export_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """One exported task: the task object, its client's name and its history, oldest first.

    The history arrives as the stored rows in jsonb (one query per batch, not per task),
    so each entry's time is parsed back before it is shown like `GET /v1/tasks/{id}/events`.
    """
    return {
        **task_json(row),
        "client": row["client_name"],
        "history": [
            history_json({**entry, "created_at": datetime.fromisoformat(entry["created_at"])})
            for entry in row["history"]
        ],
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def csv_rows(task: Mapping[str, Any]) -> list[list[Any]]:
    """The CSV rows of one exported task (see CSV_HEADER)."""
    head = [_cell(task[key]) for _, key in CSV_TASK_COLUMNS]
    if not task["history"]:
        return [head + [""] * len(CSV_HISTORY_COLUMNS)]
    return [
        head + [_cell(entry[key]) for _, key in CSV_HISTORY_COLUMNS] for entry in task["history"]
    ]


def _format_batch(tasks: list[dict[str, Any]], fmt: ExportFormat) -> str:
    if fmt == "jsonl":
        return "".join(
            json.dumps(task, separators=(",", ":"), ensure_ascii=False) + "\n" for task in tasks
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for task in tasks:
        writer.writerows(csv_rows(task))
    return buffer.getvalue()


def csv_header() -> str:
    """The CSV header line."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(CSV_HEADER)
    return buffer.getvalue()


async def export_chunks(
    store: Store,
    what: ExportRange,
    fmt: ExportFormat,
    progress: ExportProgress | None = None,
) -> AsyncGenerator[str, None]:
    """The export as text chunks (one per batch of tasks), in creation order.

    `progress`, when given, is advanced after each chunk is produced.
    """
    progress = progress if progress is not None else ExportProgress()
    if fmt == "csv":
        header = csv_header()
        progress.chars += len(header)
        yield header
    batch: list[dict[str, Any]] = []
    rows = store.stream(
        "export_tasks",
        prefetch=EXPORT_BATCH,
        scope=what.scope,
        created_after=what.created_after,
        created_before=what.created_before,
    )
    async with aclosing(rows):
        async for row in rows:
            batch.append(export_object(row))
            if len(batch) >= EXPORT_BATCH:
                yield _flush(batch, fmt, progress)
                batch = []
    if batch:
        yield _flush(batch, fmt, progress)


def _flush(batch: list[dict[str, Any]], fmt: ExportFormat, progress: ExportProgress) -> str:
    text = _format_batch(batch, fmt)
    progress.tasks += len(batch)
    progress.entries += sum(len(task["history"]) for task in batch)
    progress.chars += len(text)
    return text


async def count_tasks(store: Store, what: ExportRange) -> int:
    """How many tasks the export of `what` writes (for a progress bar)."""
    return await store.fetchval(
        "count_export_tasks",
        scope=what.scope,
        created_after=what.created_after,
        created_before=what.created_before,
    )


async def export_to_file(
    store: Store,
    what: ExportRange,
    fmt: ExportFormat,
    out: TextIO,
    on_progress: Callable[[ExportProgress], None] | None = None,
) -> ExportProgress:
    """Write the export to `out`, calling `on_progress` after every chunk; returns the totals."""
    progress = ExportProgress()
    async with aclosing(export_chunks(store, what, fmt, progress)) as chunks:
        async for chunk in chunks:
            out.write(chunk)
            if on_progress is not None:
                on_progress(progress)
    return progress


async def scope_of_client(store: Store, name: str) -> int | None:
    """The id that limits an export to the client named `name` (revoked ones too), or None."""
    row = await store.fetchrow("client_by_name", name=name)
    return None if row is None else row["id"]


class TextProgressBar:
    """A one-line progress bar redrawn in place (`\\r`) on a terminal stream, at most 5 per s.

    Plain text, no dependency: `[#########...........]  45%  4,500/10,000 tasks  ...`.
    """

    WIDTH = 30
    # Redrawing on every chunk would cost more than writing the chunk to a slow terminal.
    MIN_INTERVAL_S = 0.2

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float]) -> None:
        self.total = total
        self.out = out
        self.clock = clock
        self.started = clock()
        self._drawn_at = float("-inf")

    def line(self, progress: ExportProgress) -> str:
        """The bar for `progress`, without the carriage return."""
        share = progress.tasks / self.total if self.total else 1.0
        filled = round(share * self.WIDTH)
        elapsed = max(self.clock() - self.started, 1e-9)
        return (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%}  "
            f"{progress.tasks:,}/{self.total:,} tasks  {progress.entries:,} entries  "
            f"{progress.entries / elapsed:,.0f} entries/s"
        )

    def update(self, progress: ExportProgress) -> None:
        """Redraw unless the last redraw was very recent."""
        now = self.clock()
        if now - self._drawn_at >= self.MIN_INTERVAL_S:
            self._drawn_at = now
            self.out.write("\r" + self.line(progress))
            self.out.flush()

    def finish(self, progress: ExportProgress) -> None:
        """Draw the final state and end the line."""
        self.out.write("\r" + self.line(progress) + "\n")
        self.out.flush()
