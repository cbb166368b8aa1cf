"""diff_task: what one poll adds to a stored task's history, and whether the task changed."""

from __future__ import annotations

from typing import Any

from relay.history.transitions import NewHistoryEntry
from relay.polling.diff import PollResult, diff_task


def task_row(status: str = "queued", **columns: Any) -> dict[str, Any]:
    """A stored task as diff_task reads it: the columns of `get_task` it looks at."""
    row: dict[str, Any] = {
        "id": "tsk_1",
        "status": status,
        "cost_estimate": 0.07,
        "cost_actual": None,
        "output": None,
        "error": None,
        "poll_interval_s": 1.0,
    }
    row.update(columns)
    return row


def event(n: int, status: str, kind: str = "status_changed") -> dict[str, Any]:
    """An upstream event shaped like the simulator's (which carries ids)."""
    return {"id": f"uev_{n}", "type": kind, "status": status}


def status_changes(entries: list[NewHistoryEntry]) -> list[tuple[str | None, str | None]]:
    return [(e.from_status, e.to_status) for e in entries if e.type.startswith("task.")]


def test_new_upstream_events_are_recorded_once_each_by_key() -> None:
    first, progress = event(1, "queued"), event(2, "queued", "progress")
    known: set[str] = set()
    # The same event twice in one answer (an upstream replay) is still one entry.
    outcome, changed = diff_task(task_row(), PollResult(None, [first, progress, first]), known)
    assert changed is True
    assert outcome.entries == [
        NewHistoryEntry("upstream.status_changed", "upstream", "event:uev_1", upstream_event=first),
        NewHistoryEntry("upstream.progress", "upstream", "event:uev_2", upstream_event=progress),
    ]
    assert known == {"event:uev_1", "event:uev_2"}
    # The next poll sees the same events again: nothing new.
    again, changed = diff_task(task_row(), PollResult(None, [first, progress]), known)
    assert again.entries == []
    assert changed is False


def test_events_whose_keys_are_already_known_are_skipped() -> None:
    known = {"event:uev_1"}
    result = PollResult(None, [event(1, "queued"), event(2, "processing")])
    outcome, changed = diff_task(task_row(), result, known)
    assert [e.dedupe_key for e in outcome.entries] == ["event:uev_2"]
    assert changed is True
    assert known == {"event:uev_1", "event:uev_2"}


def test_processing_seen_only_in_events_is_recorded_before_the_final_status() -> None:
    events = [event(1, "queued"), event(2, "processing"), event(3, "succeeded")]
    result = PollResult({"status": "succeeded"}, events)
    outcome, changed = diff_task(task_row("queued"), result, set())
    assert changed is True
    assert outcome.status == "succeeded"
    assert status_changes(outcome.entries) == [
        ("queued", "processing"),
        ("processing", "succeeded"),
    ]
    types = [e.type for e in outcome.entries]
    assert types.index("task.processing") < types.index("task.succeeded")
    assert types.count("task.processing") == 1


def test_without_processing_in_the_events_no_intermediate_status_is_invented() -> None:
    outcome, _ = diff_task(task_row("queued"), PollResult({"status": "succeeded"}, []), set())
    assert status_changes(outcome.entries) == [("queued", "succeeded")]


def test_a_status_already_entered_is_not_recorded_again() -> None:
    known = {"status:processing"}
    result = PollResult({"status": "succeeded"}, [event(2, "processing")])
    outcome, _ = diff_task(task_row("processing"), result, known)
    assert status_changes(outcome.entries) == [("processing", "succeeded")]


def test_unknown_status_is_recorded_once_as_status_unknown_and_the_task_stays() -> None:
    body = {"status": "paused_for_review"}
    known: set[str] = set()
    outcome, changed = diff_task(task_row("queued"), PollResult(body, []), known)
    assert changed is True
    assert outcome.status == "queued"
    assert outcome.entries == [
        NewHistoryEntry(
            "task.status_unknown",
            "upstream",
            "status:paused_for_review",
            "queued",
            "paused_for_review",
            body,
        )
    ]
    # Upstream keeps saying so: no second entry, nothing changed.
    again, changed = diff_task(task_row("queued"), PollResult(body, []), known)
    assert again.entries == []
    assert changed is False


def test_missing_status_body_records_only_the_events() -> None:
    row = task_row("queued")
    result = PollResult(None, [event(1, "succeeded")], failure="status request failed")
    outcome, changed = diff_task(row, result, set())
    assert changed is True
    assert [e.type for e in outcome.entries] == ["upstream.status_changed"]
    # A status seen only in the events does not move the task.
    assert outcome.status == "queued"
    assert (outcome.cost_actual, outcome.output, outcome.error) == (None, None, None)


def test_missing_status_body_and_no_new_events_is_no_change() -> None:
    outcome, changed = diff_task(task_row(), PollResult(None, None), set())
    assert (outcome.entries, changed, outcome.changed) == ([], False, False)


def test_cost_output_and_error_come_over_from_the_status_body() -> None:
    output = {"videos": [{"url": "https://cdn.example/tsk_1.mp4"}]}
    body = {"status": "succeeded", "cost_estimate": 0.08, "cost_actual": 0.0756, "output": output}
    outcome, changed = diff_task(task_row("processing"), PollResult(body, []), set())
    assert changed is True
    assert (outcome.status, outcome.cost_estimate, outcome.cost_actual) == (
        "succeeded",
        0.08,
        0.0756,
    )
    assert outcome.output == output

    error = {"code": "content_policy", "message": "prompt refused"}
    failed, _ = diff_task(
        task_row("processing"), PollResult({"status": "failed", "error": error}, []), set()
    )
    assert (failed.status, failed.error) == ("failed", error)


def test_fields_the_status_body_lacks_keep_their_stored_values() -> None:
    row = task_row("processing", cost_actual=0.05, output={"videos": []})
    outcome, changed = diff_task(row, PollResult({"status": "processing"}, []), set())
    assert (outcome.cost_estimate, outcome.cost_actual, outcome.output) == (
        0.07,
        0.05,
        {"videos": []},
    )
    assert changed is False


def test_a_new_cost_alone_is_a_change() -> None:
    row = task_row("processing")
    outcome, changed = diff_task(
        row, PollResult({"status": "processing", "cost_actual": 1}, []), set()
    )
    assert outcome.entries == []
    assert outcome.cost_actual == 1.0
    assert changed is True


def test_nothing_new_is_no_change() -> None:
    known = {"event:uev_1", "status:queued"}
    result = PollResult({"status": "queued", "cost_estimate": 0.07}, [event(1, "queued")])
    outcome, changed = diff_task(task_row("queued"), result, known)
    assert outcome.entries == []
    assert outcome.status == "queued"
    assert changed is False
    assert outcome.changed is False
