"""Upstream's status body in the task object's shapes, and the resubmission backoff."""

from __future__ import annotations

import math

import pytest

from relay.intake.tasks import RESUBMIT_MAX_S, resubmit_delay
from relay.polling.diff import PollResult, diff_task, normalise_status
from relay.upstream.client import number_field

STORED = {"cost_estimate": 0.07, "cost_actual": None, "output": None, "error": None}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), (2, 2.0), ("0.0756", 0.0756), (" 3 ", 3.0), ("abc", None), (True, None),
     ("nan", None), (math.inf, None), (None, None), ([1], None)],
)  # fmt: skip
def test_number_field_reads_numbers_and_numeric_strings(value: object, expected: object) -> None:
    assert number_field(value) == expected


def test_string_error_becomes_code_and_message() -> None:
    shapes = normalise_status({"status": "failed", "error": "GPU out of memory"}, **STORED)
    assert shapes.error == {"code": "upstream_error", "message": "GPU out of memory"}
    assert shapes.irregular == ("error",)


def test_object_error_and_output_are_kept_as_sent() -> None:
    body = {"status": "failed", "error": {"code": "nsfw", "message": "x"}, "output": {"a": 1}}
    shapes = normalise_status(body, **STORED)
    assert (shapes.error, shapes.output, shapes.irregular) == (body["error"], {"a": 1}, ())


def test_non_object_error_keeps_its_json_as_the_message() -> None:
    shapes = normalise_status({"status": "failed", "error": ["a", 1]}, **STORED)
    assert shapes.error == {"code": "upstream_error", "message": '["a", 1]'}


@pytest.mark.parametrize("output", ["https://x/v.mp4", ["https://x/v.mp4"], 7, False])
def test_output_that_is_not_an_object_is_wrapped(output: object) -> None:
    shapes = normalise_status({"status": "succeeded", "output": output}, **STORED)
    assert shapes.output == {"value": output}
    assert shapes.irregular == ("output",)


def test_costs_as_numeric_strings_are_read_and_marked_irregular() -> None:
    body = {"status": "succeeded", "cost_estimate": "0.08", "cost_actual": "0.0756"}
    shapes = normalise_status(body, **STORED)
    assert (shapes.cost_estimate, shapes.cost_actual) == (0.08, 0.0756)
    assert shapes.irregular == ("cost_estimate", "cost_actual")


def test_absent_fields_keep_the_stored_values() -> None:
    stored = {"cost_estimate": 0.07, "cost_actual": 0.05, "output": {"a": 1}, "error": None}
    shapes = normalise_status({"status": "succeeded"}, **stored)
    assert (shapes.cost_estimate, shapes.cost_actual, shapes.output) == (0.07, 0.05, {"a": 1})
    assert shapes.irregular == ()


def test_irregular_terminal_body_is_kept_verbatim_in_the_status_change() -> None:
    row = {"id": "tsk_1", "status": "processing", "poll_interval_s": 1.0, **STORED}
    body = {"status": "failed", "error": "boom", "cost_actual": "0.01"}
    outcome, changed = diff_task(row, PollResult(body, []), set())
    assert changed
    [entry] = outcome.entries
    assert (entry.type, entry.to_status, entry.upstream_event) == ("task.failed", "failed", body)
    assert outcome.error == {"code": "upstream_error", "message": "boom"}
    assert outcome.cost_actual == 0.01


def test_resubmit_delay_is_capped_so_recovery_never_waits_minutes() -> None:
    assert RESUBMIT_MAX_S <= 60
    assert max(resubmit_delay(n) for n in range(1, 40)) <= RESUBMIT_MAX_S * 1.2
    assert resubmit_delay(1) <= 1.2
    assert resubmit_delay(30, retry_after=120.0) == 120.0  # upstream's Retry-After wins
