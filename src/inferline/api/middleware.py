"""Request ids, access logs and latency metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferline.api.problems import problem
from inferline.metrics import Metrics

log = structlog.get_logger("inferline.http")


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes or max_body_bytes

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

        declared = headers.get(b"content-length", b"0")
        # File uploads have their own, larger limit; the multipart framing adds a few hundred bytes.
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.max_upload_bytes + 64 * 1024 if multipart else self.max_body_bytes
        too_large = problem(413, f"request body is over the limit of {limit} bytes")
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI passes HTTPExceptions from body reading through to the problem handler.
                raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        try:
            if declared.isdigit() and int(declared) > limit:
                await too_large(scope, receive, send_with_id)  # refused before reading a byte
                return
            await self.app(scope, counting_receive, send_with_id)
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
