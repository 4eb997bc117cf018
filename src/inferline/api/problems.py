"""Errors as `application/problem+json`: the one table from domain errors to HTTP statuses."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from inferline import db, errors
from inferline.api import openapi

log = structlog.get_logger(__name__)
STATUS_OF: list[tuple[type[errors.InferlineError], int]] = [
    (errors.NotFound, 404),
    (errors.Conflict, 409),  # InvalidTransition, IdempotencyConflict, QuotaExceeded
    (errors.InvalidInput, 422),
    (errors.TooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.Overloaded, 429),
    (errors.Unavailable, 503),
]
UNAVAILABLE_RETRY_AFTER_S = 5


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    content = _sendable(body | extra)
    return JSONResponse(content, status_code=status, headers=headers, media_type="application/problem+json")


def _sendable(value: Any) -> Any:
    """`value` with every lone UTF-16 surrogate in its text shown as U+FFFD: a refusal may quote what the
    client sent (a field's name, a key), and UTF-8 cannot encode one (the refusal became a 500)."""
    if isinstance(value, str):
        return errors.sendable(value)
    if isinstance(value, dict):
        return {_sendable(key): _sendable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_sendable(item) for item in value]
    return value


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.InferlineError)
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.Overloaded | errors.Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if isinstance(exc, errors.InvalidInput) and exc.field:
        extra["field"] = exc.field
    detail = str(exc)
    if status == 500:  # an error with no status of its own (a ModelError, a JobError): ours to look into
        request_id = structlog.contextvars.get_contextvars().get("request_id", "?")
        log.error("request_failed", error_type=type(exc).__name__, exc_info=exc)
        detail = errors.shown_message(exc, reference=f"request {request_id}")
    return problem(status, detail, headers or None, **extra)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"]} for err in exc.errors()]
    first = details[0] if details else {"field": "", "message": "invalid request"}
    return problem(422, f"{first['field']}: {first['message']}", field=first["field"], errors=details)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI's 400 for a JSON body it cannot decode (not UTF-8): malformed JSON, which is a 422.
        return problem(422, f"body: not JSON ({exc.__cause__})", field="body")
    return problem(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database that does not answer is a 503 to retry (a route that reads it, or the key check of any
    route); any other database error stays a 500 that hides its SQL."""
    if db.unavailable(exc):
        log.warning("database_unavailable", error_type=type(exc).__name__, error=str(exc)[:300])
        retry_after_s = UNAVAILABLE_RETRY_AFTER_S
        return await _domain_error(
            request, errors.Unavailable("the database does not answer; try again", retry_after_s=retry_after_s)
        )
    request_id = structlog.contextvars.get_contextvars().get("request_id", "?")
    log.error("request_failed", error_type=type(exc).__name__, exc_info=exc)
    return problem(500, errors.shown_message(exc, reference=f"request {request_id}"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.InferlineError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for cls in (sa.exc.SQLAlchemyError, ConnectionError):
        app.add_exception_handler(cls, _database_error)
    openapi.install(app)  # the document describes these bodies, on every route that can answer with them
