"""Tracing on: spans for API requests, upstream calls, polls and deliveries, one trace.

The SDK's InMemorySpanExporter stands in for a collector, in-process; `relay.core.tracing.enable`
installs the same instrumentations `setup()` does from OTEL_* (checked in subprocesses below).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from relay.core import tracing
from tests.helpers import relay_env, submit_task, wait_for
from tests.receiver import running_receiver

# Fast dispatch and polling, so the test waits on the relay's work rather than its idling.
ALL_ROLES = {
    "roles": "api,poller,dispatcher",
    "dispatch_idle_poll_s": "100ms",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, spans kept in memory; off again (uninstrumented) after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "relay-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def http_method(span: ReadableSpan) -> object:
    """The HTTP method of a span (old or new semantic conventions); None for others."""
    attributes = span.attributes or {}
    return attributes.get("http.request.method", attributes.get("http.method"))


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is `parent`."""
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_api_request_upstream_call_poll_and_delivery_are_spans_of_one_trace(
    spans: InMemorySpanExporter,
    start_relay: Callable[..., Awaitable[TestClient]],
    new_client,
) -> None:
    api = await start_relay(**ALL_ROLES)
    client = await new_client()
    async with running_receiver() as receiver:
        # A receiver keeping a token in its URL: the token must not reach a span.
        task = await submit_task(api, client, webhook_url=receiver.url("/hooks?token=s3cr3t"))
        (webhook,) = await receiver.wait_for_requests(1)

        async def recorded(name: str, **attributes: object) -> list[ReadableSpan]:
            """Finished spans named `name` with these attributes, once there are some."""

            async def found() -> list[ReadableSpan] | None:
                matching = [
                    s
                    for s in spans.get_finished_spans()
                    if s.name == name
                    and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
                ]
                return matching or None

            return await wait_for(found)

        # The API request: the relay's server span for POST /v1/tasks, and inside it the
        # task row's insert (asyncpg) and the submission upstream (aiohttp client).
        (request,) = await recorded("POST /v1/tasks", **{"http.route": "/v1/tasks"})
        assert request.kind == SpanKind.SERVER
        finished = list(spans.get_finished_spans())
        inside = children(finished, request)
        assert any(
            "INSERT INTO tasks" in str((s.attributes or {}).get("db.statement")) for s in inside
        )
        (upstream,) = [s for s in inside if http_method(s) == "POST"]
        assert upstream.kind == SpanKind.CLIENT
        assert str((upstream.attributes or {}).get("http.url")).endswith("/api/v1/tasks")

        # The delivery: a webhook_attempt span whose parent is the submission's request span
        # (the traceparent stored with the task), the HTTP POST inside it, and the receiver
        # handed that POST's context: its trace is the submission's.
        (attempt,) = await recorded("webhook_attempt")
        assert attempt.context.trace_id == request.context.trace_id
        assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
        assert (attempt.attributes or {})["relay.event_id"] == webhook.webhook_id
        assert (attempt.attributes or {})["http.response.status_code"] == 200
        (post,) = children(list(spans.get_finished_spans()), attempt)
        assert post.kind == SpanKind.CLIENT and http_method(post) == "POST"
        assert str((post.attributes or {}).get("http.url")) == receiver.url("/hooks")
        # (Server spans are left out: the in-process receiver's own span records its URL.)
        recorded_by_relay = [s for s in spans.get_finished_spans() if s.kind != SpanKind.SERVER]
        assert "s3cr3t" not in "".join(s.to_json() for s in recorded_by_relay)
        trace_id = f"{request.context.trace_id:032x}"
        flags = f"{int(post.context.trace_flags):02x}"
        assert (
            webhook.headers["traceparent"] == f"00-{trace_id}-{post.context.span_id:016x}-{flags}"
        )

        # A poll pass that claimed the task, reading its status upstream inside the pass.
        async def poll_with_upstream_read() -> list[ReadableSpan] | None:
            finished = list(spans.get_finished_spans())
            passes = [
                s
                for s in finished
                if s.name == "poll_pass" and (s.attributes or {}).get("relay.claimed", 0) >= 1
            ]
            return [
                read
                for p in passes
                for read in children(finished, p)
                if http_method(read) == "GET" and task["upstream_task_id"] in str(read.attributes)
            ] or None

        assert await wait_for(poll_with_upstream_read)


# A span from the relay's own decorator, in a process configured only by OTEL_* variables;
# the console exporter prints it when the process exits (the provider flushes at exit).
TRACED_PROCESS = """
import asyncio
from relay.core import tracing

assert tracing.setup(), "OTEL_* asked for traces"

class Poller:
    @tracing.poll_pass
    async def run_pass(self) -> int:
        return 3

assert asyncio.run(Poller().run_pass()) == 3
"""
# The core without the otel extra: opentelemetry cannot be imported at all.
WITHOUT_EXTRA = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(f"no module named {name!r} (blocked)")

sys.meta_path.insert(0, NoOpenTelemetry())
from relay.core import tracing
from relay.app import create_app
from relay.core.config import Settings

create_app(Settings(database_url="postgresql://relay@127.0.0.1:1/relay"))
create_app(Settings(database_url="postgresql://relay@127.0.0.1:1/relay"))
assert not tracing.enabled()
print("traceparent", tracing.submission_traceparent(
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
"""


async def run_python(code: str, **environ: str) -> tuple[int, str, str]:
    """Run `code` in a fresh interpreter with only PATH and `environ`: (rc, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=relay_env(**environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("environ", "service"),
    [
        ({}, "mindvideo-relay"),
        ({"OTEL_SERVICE_NAME": "relay-eu"}, "relay-eu"),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=relay-us,deployment.environment=prod"},
            "relay-us",
        ),
    ],
)
async def test_otel_variables_alone_turn_tracing_on_named_mindvideo_relay_by_default(
    environ: dict[str, str], service: str
) -> None:
    rc, out, err = await run_python(TRACED_PROCESS, OTEL_TRACES_EXPORTER="console", **environ)
    assert rc == 0, err
    (span,) = [json.loads(s) for s in re.findall(r"^\{\n.*?^\}$", out, re.M | re.S)]
    assert span["name"] == "poll_pass"
    assert span["attributes"] == {"relay.claimed": 3}
    assert span["resource"]["attributes"]["service.name"] == service


async def test_without_the_extra_nothing_is_traced_and_the_traceparent_still_travels() -> None:
    # Asked for, but not installed: the relay starts untraced (a warning, not a failure).
    rc, out, err = await run_python(WITHOUT_EXTRA, OTEL_TRACES_EXPORTER="console")
    assert rc == 0, err
    assert (out + err).count("tracing_unavailable") == 1  # two applications, one warning
    assert "traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" in out
    # Not asked for: opentelemetry is not even looked for.
    rc, out, err = await run_python(WITHOUT_EXTRA)
    assert rc == 0, err
    assert "tracing_unavailable" not in out + err
