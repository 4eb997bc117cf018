"""Request ids, access logs and latency metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
import uuid

import structlog
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer, use_span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferline.metrics import Metrics
from inferline.tracing import TRACEPARENT, current_traceparent, incoming

log = structlog.get_logger("inferline.http")


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode(errors="replace")[:100] or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500  # until a response starts
        services = getattr(scope["app"].state, "services", None)
        tracer: Tracer = services.tracing.tracer if services is not None else NoOpTracer()
        parent = incoming({TRACEPARENT: headers.get(b"traceparent", b"").decode("latin-1")})
        span = tracer.start_span(
            scope["method"],  # named with its route once routed
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": scope["method"],
                "url.path": scope["path"][:500],
                "inferline.request_id": request_id,
            },
        )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if traceparent := current_traceparent():
                    extra.append((b"traceparent", traceparent.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            with use_span(span, end_on_exit=False):
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            full_route = _full_template(scope, path)
            span.update_name(f"{scope['method']} {full_route}")
            span.set_attribute("http.route", full_route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if services is not None:
                metrics: Metrics = services.metrics
                metrics.http_requests.labels(scope["method"], path, str(status)).observe(elapsed_s)
            tenant = scope.get("state", {}).get("tenant")
            with use_span(span, end_on_exit=True):  # the access log line carries the request's trace
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed_s * 1000, 2),
                    tenant=tenant,
                )


def _full_template(scope: Scope, path: str) -> str:
    """The route's template with its routers' prefixes (`/api/v1/jobs/{job_id}`, where the route alone says
    `/jobs/{job_id}`): FastAPI keeps it in the scope of an included router's route."""
    effective = scope.get("fastapi", {}).get("effective_route_context")
    full = getattr(effective, "path", None)
    return full if isinstance(full, str) else path
