"""Export formatting: every field the API shows has a CSV column; the progress bar reads well."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from relay.audit.export import (
    CSV_HISTORY_COLUMNS,
    CSV_TASK_COLUMNS,
    ExportProgress,
    TextProgressBar,
    csv_rows,
)
from relay.core.payloads import history_json, task_json

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TASK_ROW = {
    "client_name": "svc-a",
    "id": "tsk_1",
    "model": "m",
    "status": "queued",
    "upstream_task_id": None,
    "upstream_request_id": None,
    "cost_estimate": 0.5,
    "cost_actual": None,
    "output": None,
    "error": None,
    "metadata": {"a": [1, 2]},
    "webhook_url": None,
    "webhook_events": None,
    "created_at": NOW,
    "updated_at": NOW,
    "completed_at": None,
}
ENTRY_ROW = {
    "id": "evt_1",
    "seq": 1,
    "type": "task.queued",
    "from_status": None,
    "to_status": "queued",
    "source": "relay",
    "upstream_event": None,
    "created_at": NOW,
    "prev_hash": "0" * 64,
    "hash": "a" * 64,
}


def test_every_task_and_history_field_has_a_csv_column() -> None:
    # A field added to the task object or a history entry must be added to the CSV too.
    assert {key for _, key in CSV_TASK_COLUMNS} == {*task_json(TASK_ROW), "client"}
    assert {key for _, key in CSV_HISTORY_COLUMNS} == set(history_json(ENTRY_ROW))


def test_csv_cells_are_json_for_objects_and_empty_for_null() -> None:
    task = {**task_json(TASK_ROW), "client": "svc-a", "history": [history_json(ENTRY_ROW)]}
    [row] = csv_rows(task)
    cells = dict(zip([c for c, _ in CSV_TASK_COLUMNS + CSV_HISTORY_COLUMNS], row, strict=True))
    assert cells["metadata"] == '{"a":[1,2]}'
    assert cells["cost_actual"] == "" and cells["cost_estimate"] == 0.5
    assert cells["event_to_status"] == "queued" and cells["event_from_status"] == ""


def test_the_progress_bar_redraws_in_place_at_most_five_times_a_second() -> None:
    now = [100.0]
    out = io.StringIO()
    bar = TextProgressBar(1000, out, lambda: now[0])
    bar.update(ExportProgress(tasks=250, entries=1250))
    now[0] += 0.1
    bar.update(ExportProgress(tasks=300, entries=1500))  # too soon: not drawn
    now[0] += 0.2
    bar.update(ExportProgress(tasks=500, entries=2500))
    bar.finish(ExportProgress(tasks=1000, entries=5000))
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 3
    assert lines[0].startswith("[" + "#" * 8 + "." * 22 + "]  25%  250/1,000 tasks  1,250 entries")
    assert "500/1,000 tasks" in lines[1]
    assert lines[2].startswith("[" + "#" * 30 + "] 100%") and lines[2].endswith("\n")
