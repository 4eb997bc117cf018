"""Traces: OpenTelemetry spans through a request, the jobs it submits and the model calls they make.

Every request and every job attempt runs in a span, so its W3C trace id is in every log line it writes
(`trace_id`, beside `request_id`, `job_id` and `tenant`) and goes on to the jobs it submits: a job keeps
the `traceparent` of the span that submitted it (`jobs.trace_parent`), and its attempts' spans are that
span's children, whichever process runs them, as are the model calls they make. An incoming `traceparent`
header is honoured, and every answer carries the request's.

Spans are recorded and sent (OTLP over HTTP, in batches, from a thread of the SDK's) only when
`INFERLINE_OTLP_ENDPOINT` is set; without it they are non-recording: trace ids for the logs and for
propagation, ~3.5 µs a submission, and a job attempt's ids drawn only if read (`DeferredSpan`;
docs/monitor.md). Each process has its own provider (`Tracing`), never the global one, so a process may
build several apps (the tests do) without one's exporter receiving another's spans.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
MAX_TRACEPARENT_CHARS = 55  # version-traceid-parentid-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """This process's tracer provider; `endpoint` (an OTLP/HTTP collector's base URL) makes its spans
    recorded and exported, a share `sample_ratio` of the traces (by trace id)."""

    def __init__(
        self, endpoint: str | None, *, service: str = "inferline", sample_ratio: float = 1.0, timeout_s: float = 10
    ) -> None:
        self.endpoint = endpoint
        # A trace continued from a `traceparent` (a client's, or a job's stored one) is decided again by its
        # id: the same ratio gives the same answer for one id, and a client cannot have every request
        # recorded by sending its sampled flag.
        ratio = TraceIdRatioBased(sample_ratio)
        sampler = (
            ParentBased(ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ratio) if endpoint else ALWAYS_OFF
        )
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
        if endpoint:
            # Imported here: the exporter pulls in protobuf and requests, which a process without one skips.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=timeout_s)
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("inferline")

    def shutdown(self) -> None:
        """Send what is still buffered (bounded by the exporter's timeout), then stop."""
        self.provider.shutdown()


def incoming(headers: Mapping[str, str]) -> Context:
    """The context an incoming `traceparent` header continues (an empty one for none or a malformed one)."""
    value = headers.get(TRACEPARENT)
    if not value or len(value) > MAX_TRACEPARENT_CHARS:
        return Context()
    return _PROPAGATOR.extract({TRACEPARENT: value})


def continued_span(tracer: Tracer, name: str, traceparent: str | None, kind: SpanKind) -> Span:
    """A span continuing `traceparent` (a new trace for None), not yet made current. From a tracer that
    records nothing (no endpoint: its sampler is ALWAYS_OFF), a `DeferredSpan`: the same ids, drawn
    only if something reads them."""
    if getattr(tracer, "sampler", None) is ALWAYS_OFF:
        return DeferredSpan(tracer, name, traceparent, kind)
    parent = incoming({TRACEPARENT: traceparent}) if traceparent else None
    return tracer.start_span(name, context=parent, kind=kind)


# A log line of `to_thread` code may read a span's ids as the loop does. Re-entrant: drawing a span's ids
# reads its parent's, which may be another DeferredSpan's drawn in the same thread.
_DRAW_LOCK = threading.RLock()


class DeferredSpan(NonRecordingSpan):
    """A non-recording span whose context (trace id, span id, flags, trace state) is made by its tracer's
    `start_span` when first read (a log line's `trace_ids`, a child's `current_traceparent`, a child span),
    not when it starts: a job attempt that reads none skips parsing its `traceparent`, drawing two random
    ids and sampling, most of what a non-recording span costs (docs/benchmarks.md, issue 20)."""

    def __init__(self, tracer: Tracer, name: str, traceparent: str | None, kind: SpanKind) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        # Without a traceparent the parent is the context current now (later, it holds this span).
        parent: str | Context = traceparent or otel_context.get_current()
        self._start: tuple[Tracer, str, str | Context, SpanKind] | None = (tracer, name, parent, kind)

    def get_span_context(self) -> SpanContext:
        if self._start is not None:
            with _DRAW_LOCK:
                if self._start is not None:
                    tracer, name, parent, kind = self._start
                    context = incoming({TRACEPARENT: parent}) if isinstance(parent, str) else parent
                    self._context = tracer.start_span(name, context=context, kind=kind).get_span_context()
                    self._start = None
        return self._context


def current_traceparent() -> str | None:
    """The `traceparent` of the span running now, to continue it elsewhere (None outside any span)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids on every line written inside one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event
