"""The contract's words are spelled once and agree with each other."""

from __future__ import annotations

from relay.core.vocabulary import EVENT_TYPES, TASK_STATUSES, TERMINAL_STATUSES


def test_there_is_one_event_type_per_task_status() -> None:
    assert EVENT_TYPES == tuple(f"task.{status}" for status in TASK_STATUSES)


def test_terminal_statuses_are_task_statuses_and_queued_processing_are_not_terminal() -> None:
    assert TERMINAL_STATUSES < set(TASK_STATUSES)
    assert set(TASK_STATUSES) - TERMINAL_STATUSES == {"queued", "processing"}
