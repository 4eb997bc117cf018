"""Request ids, access logs and latency metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferline.metrics import Metrics

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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                metrics: Metrics = services.metrics
                metrics.http_requests.labels(scope["method"], path, str(status)).observe(elapsed_s)
            tenant = scope.get("state", {}).get("tenant")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed_s * 1000, 2),
                tenant=tenant,
            )
