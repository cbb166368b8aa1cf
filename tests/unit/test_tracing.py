"""Tracing without a collector: traceparent validation, when OTEL_* asks for traces."""

from __future__ import annotations

import pytest

from relay.core import tracing
from relay.core.config import ConfigError, load_settings, otel_trace_exporters

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("header", "stored"),
    [
        (VALID, VALID),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", f"00-{TRACE_ID}-{PARENT_ID}-00"),
        (f"  {VALID}\t", VALID),  # optional whitespace around a header value
        # A later version may append fields: the first four are read, version 00 is sent on.
        (f"01-{TRACE_ID}-{PARENT_ID}-01-extra", VALID),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01", VALID),
    ],
)
def test_a_valid_traceparent_is_kept_as_version_00(header: str, stored: str) -> None:
    assert tracing.parse_traceparent(header) == stored


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # W3C: lowercase hex only
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # short trace id
        f"00-{TRACE_ID}-{PARENT_ID}0-01",  # long parent id
        f"00-{TRACE_ID}-{PARENT_ID}-1",  # one-digit flags
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID}-{PARENT_ID}-0g",
        VALID + "\x00",
    ],
)
def test_an_invalid_traceparent_is_dropped_not_refused(header: str | None) -> None:
    assert tracing.parse_traceparent(header) is None


def test_tracing_off_stores_the_callers_validated_header_and_sends_it_on() -> None:
    assert not tracing.enabled()
    assert tracing.submission_traceparent(f" {VALID} ") == VALID
    assert tracing.submission_traceparent("00-nope") is None
    assert tracing.submission_traceparent(None) is None
    assert tracing.delivery_headers(VALID) == {"traceparent": VALID}
    assert tracing.delivery_headers(None) == {}


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "relay-eu"}, ()),  # naming the service asks for nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "OTLP, console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
    ],
)
def test_traces_are_asked_for_by_the_standard_otel_variables(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert otel_trace_exporters(environ) == exporters


def test_an_exporter_the_relay_does_not_ship_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER: 'zipkin' is not available"):
        otel_trace_exporters({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})


def test_start_up_stops_on_an_exporter_the_relay_does_not_ship(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        load_settings()
