"""Tracing as an option: OpenTelemetry when the `otel` extra is installed and asked for.

Without the extra, or without the standard `OTEL_*` variables asking for an exporter (see
`relay.core.config.otel_trace_exporters`), every function here is a cheap no-op and
opentelemetry is never imported. With both, `setup()` (called by `create_app`) installs a
TracerProvider whose exporter, sampler and resource the SDK configures from `OTEL_*` itself,
and the OpenTelemetry instrumentations for aiohttp (server: API requests; client: upstream
calls and webhook deliveries) and asyncpg (every query). The relay adds two spans of its
own: `poll_pass` around a poller pass and `webhook_attempt` around one delivery attempt.

Trace context reaches a task's webhooks in either mode: the `traceparent` of the request
that submitted the task is stored with it (`submission_traceparent`) and sent with every
webhook of that task (`delivery_headers`), so a receiver's trace links to the submission.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from relay.core.config import otel_trace_exporters

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger(__name__)

# The service name spans carry when OTEL_SERVICE_NAME (or service.name in
# OTEL_RESOURCE_ATTRIBUTES) does not say otherwise.
DEFAULT_SERVICE_NAME = "mindvideo-relay"
TRACEPARENT_HEADER = "traceparent"
# W3C Trace Context, "traceparent": version-trace_id-parent_id-flags, lowercase hex. A
# version above 00 may append fields after the flags; version ff is invalid.
_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)

R = TypeVar("R")
S = TypeVar("S")


class _State:
    """What `enable()` set up; `tracer` None means tracing is off."""

    tracer: Any = None
    instrumentors: Sequence[Any] = ()
    # Asked for without the extra: warned once, however many applications are created.
    warned_unavailable = False


_state = _State()


def parse_traceparent(value: str | None) -> str | None:
    """A valid W3C `traceparent` as the version-00 header to propagate, or None.

    Invalid values are dropped, as the W3C recommendation asks (a receiver then starts a
    new trace), never refused: a tracing header must not fail a submission. A future
    version's extra fields are cut off, since what is propagated is version 00.
    """
    if value is None:
        return None
    match = _TRACEPARENT.match(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.group("version", "trace_id", "parent_id", "flags")
    if version == "ff" or (version == "00" and match.group("rest") is not None):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return f"00-{trace_id}-{parent_id}-{flags}"


def enabled() -> bool:
    """True while this process exports spans."""
    return _state.tracer is not None


def setup() -> bool:
    """Turn tracing on once per process when the extra is installed and OTEL_* asks for it.

    Returns whether tracing is on. Called by `create_app` before the application exists,
    since the aiohttp server instrumentation takes effect on applications created after it.
    """
    if enabled():
        return True
    exporters = otel_trace_exporters()
    if not exporters:
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        # Asked for, but the extra is missing: say so once rather than fail a working relay.
        if not _state.warned_unavailable:
            _state.warned_unavailable = True
            log.warning(
                "tracing_unavailable",
                reason="OTEL_* variables ask for traces but the `otel` extra is not installed",
            )
        return False
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; only a service
    # left unnamed by both gets the relay's name.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for name in exporters:
        exporter: SpanExporter
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:  # "otlp": HTTP/protobuf; endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    enable(provider)
    log.info(
        "tracing_enabled",
        exporters=list(exporters),
        service=resource.attributes.get(SERVICE_NAME),
    )
    return True


def enable(provider: TracerProvider) -> None:
    """Instrument aiohttp (server and client) and asyncpg, and trace the relay's own spans.

    `provider` is passed explicitly rather than installed globally, so `disable()` (tests)
    can undo every part of it.
    """
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    client = AioHttpClientInstrumentor()
    instrumentors: list[Any] = [AioHttpServerInstrumentor(), client, AsyncPGInstrumentor()]
    with warnings.catch_warnings():
        # The server instrumentation subclasses web.Application, which aiohttp discourages
        # with a DeprecationWarning; it is that package's choice, not a problem to report.
        warnings.filterwarnings("ignore", "Inheritance class", DeprecationWarning)
        for instrumentor in instrumentors:
            if instrumentor is client:
                # Outgoing URLs without their query: a webhook URL may carry a receiver's token.
                instrumentor.instrument(tracer_provider=provider, url_filter=_without_query)
            else:
                instrumentor.instrument(tracer_provider=provider)
    _state.instrumentors = instrumentors
    _state.tracer = provider.get_tracer("relay")


def _without_query(url: Any) -> str:
    """A yarl URL as recorded on client spans: no user-info, no query, no fragment."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def disable() -> None:
    """Undo `enable()`: applications and sessions created afterwards are not traced."""
    for instrumentor in _state.instrumentors:
        instrumentor.uninstrument()
    _state.instrumentors = ()
    _state.tracer = None


def submission_traceparent(header: str | None) -> str | None:
    """The `traceparent` to store with a task submitted by the current request.

    Tracing on: the relay's own request span (a child of the caller's trace, or a new
    trace), so the webhooks hang under the submission as the relay recorded it. Tracing
    off: the caller's header, validated, so propagation works without the extra.
    """
    if _state.tracer is not None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
            )
    return parse_traceparent(header)


def delivery_headers(traceparent: str | None) -> dict[str, str]:
    """The trace header of a webhook delivery of a task submitted with `traceparent`.

    Tracing on, the aiohttp client instrumentation replaces it with the delivery's own
    span, which `webhook_attempt` made a child of this one: the trace id is the same.
    """
    return {TRACEPARENT_HEADER: traceparent} if traceparent else {}


def poll_pass(method: Callable[[S], Awaitable[R]]) -> Callable[[S], Coroutine[Any, Any, R]]:
    """Decorates the poller's `run_pass`: a `poll_pass` span with the number claimed."""

    @functools.wraps(method)
    async def traced(self: S) -> R:
        if _state.tracer is None:
            return await method(self)
        with _state.tracer.start_as_current_span("poll_pass") as span:
            claimed = await method(self)
            span.set_attribute("relay.claimed", claimed)
            return claimed

    return traced


def webhook_attempt(
    method: Callable[[S, Mapping[str, Any]], Awaitable[R]],
) -> Callable[[S, Mapping[str, Any]], Awaitable[R]]:
    """Decorates the dispatcher's `_attempt(row)`: a `webhook_attempt` span per attempt.

    The span is a child of the submission's stored `traceparent` (when there is one), so
    the delivery, the HTTP request inside it and the receiver's own spans join that trace.
    """

    @functools.wraps(method)
    async def traced(self: S, row: Mapping[str, Any]) -> R:
        if _state.tracer is None:
            return await method(self, row)
        from opentelemetry.trace import Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        traceparent = row.get("traceparent")
        parent = (
            TraceContextTextMapPropagator().extract({TRACEPARENT_HEADER: traceparent})
            if traceparent
            else None
        )
        attributes = {
            "relay.delivery_id": row["id"],
            "relay.event_id": row["event_id"],
            "relay.attempt": row["attempt_count"],
        }
        if row.get("subscription_id"):
            attributes["relay.subscription_id"] = row["subscription_id"]
        with _state.tracer.start_as_current_span(
            "webhook_attempt", context=parent, attributes=attributes
        ) as span:
            result = await method(self, row)
            # An AttemptResult: a failed attempt is an error of this span (not of the relay).
            status_code = getattr(result, "status_code", None)
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
            if not getattr(result, "succeeded", True):
                span.set_status(Status(StatusCode.ERROR, getattr(result, "error", None)))
            return result

    return traced
