"""A job attempt's span (`tracing.continued_span`): without an endpoint its ids are drawn only when read, and
are what the SDK would have drawn when it started."""

from __future__ import annotations

import threading

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, TraceFlags, set_span_in_context

from inferline.tracing import DeferredSpan, Tracing, continued_span, current_traceparent, incoming

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_without_an_endpoint_a_span_continuing_a_traceparent_reads_as_the_sdks_own() -> None:
    tracer = Tracing(None).tracer
    span = continued_span(tracer, "job echo", TRACEPARENT, SpanKind.CONSUMER)
    assert isinstance(span, DeferredSpan) and not span.is_recording()
    sdk = tracer.start_span("job echo", context=incoming({"traceparent": TRACEPARENT}), kind=SpanKind.CONSUMER)
    read, expected = span.get_span_context(), sdk.get_span_context()
    assert format(read.trace_id, "032x") == TRACE_ID
    assert read.span_id not in (0, 0x00F067AA0BA902B7) and read.is_valid and not read.is_remote
    assert (read.trace_flags, read.trace_state) == (expected.trace_flags, expected.trace_state)
    assert not read.trace_flags & TraceFlags.SAMPLED
    assert span.get_span_context() is read  # drawn once


def test_a_deferred_span_made_current_gives_its_trace_to_what_runs_inside_it() -> None:
    """Read from inside itself (a log line, a child job's traceparent), a span with no traceparent starts a
    trace of its own (its parent is the context current when it started, not itself)."""
    span = continued_span(Tracing(None).tracer, "job echo", None, SpanKind.CONSUMER)
    token = otel_context.attach(set_span_in_context(span))
    try:
        traceparent = current_traceparent()
    finally:
        otel_context.detach(token)
    context = span.get_span_context()
    assert context.is_valid
    assert traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def test_threads_reading_a_deferred_span_at_once_read_the_same_ids() -> None:
    span = continued_span(Tracing(None).tracer, "job echo", TRACEPARENT, SpanKind.CONSUMER)
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(span.get_span_context().span_id)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1


def test_with_an_endpoint_a_job_span_records_from_its_start() -> None:
    tracing = Tracing("http://127.0.0.1:9", timeout_s=0.1)
    try:
        span = continued_span(tracing.tracer, "job echo", TRACEPARENT, SpanKind.CONSUMER)
        assert not isinstance(span, DeferredSpan) and span.is_recording()
        assert format(span.get_span_context().trace_id, "032x") == TRACE_ID
        span.end()
    finally:
        tracing.provider.shutdown()


def test_a_deferred_span_inside_another_reads_its_parents_trace_without_waiting_on_itself() -> None:
    """Drawing the inner span's ids reads the outer's, whose draw takes the same lock in the same thread."""
    tracer = Tracing(None).tracer
    outer = continued_span(tracer, "job outer", None, SpanKind.CONSUMER)
    token = otel_context.attach(set_span_in_context(outer))
    try:
        inner = continued_span(tracer, "job inner", None, SpanKind.CONSUMER)
    finally:
        otel_context.detach(token)
    read: list[int] = []
    reader = threading.Thread(target=lambda: read.append(inner.get_span_context().trace_id), daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert read, "the inner span's draw waited on the lock its own thread held"
    assert read == [outer.get_span_context().trace_id]
