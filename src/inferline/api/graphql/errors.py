"""Errors as GraphQL errors: the one table from domain errors to `extensions.code`, beside the HTTP one
(`api/problems.py`, in the same order; a test keeps them alike).

Codes of the document itself, never raised by a resolver: `GRAPHQL_PARSE_FAILED` (syntax, or over the
token limit), `GRAPHQL_VALIDATION_FAILED` (fields, arguments and variables against the schema), and the
limits' `QUERY_TOO_DEEP` and `QUERY_TOO_COMPLEX` (`limits.py`). Anything else a resolver raises is
`INTERNAL_SERVER_ERROR` with `errors.shown_message`'s text (the log has the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
from graphql import GraphQLError, GraphQLSyntaxError
from pydantic import BaseModel, ValidationError

from inferline import db, errors
from inferline.api.problems import UNAVAILABLE_RETRY_AFTER_S

log = structlog.get_logger(__name__)

CODE_OF: list[tuple[type[errors.InferlineError], str]] = [
    (errors.NotFound, "NOT_FOUND"),  # another tenant's ids too: never say which
    (errors.Conflict, "CONFLICT"),
    (errors.InvalidInput, "INVALID_INPUT"),
    (errors.TooLarge, "TOO_LARGE"),
    (errors.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE"),
    (errors.Unauthorized, "UNAUTHENTICATED"),
    (errors.Forbidden, "FORBIDDEN"),
    (errors.Overloaded, "RATE_LIMITED"),
    (errors.Unavailable, "UNAVAILABLE"),
]
INTERNAL = "INTERNAL_SERVER_ERROR"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
Model = TypeVar("Model", bound=BaseModel)


def described(exc: BaseException, *, reference: str) -> tuple[str, dict[str, Any]]:
    """What the caller is shown of `exc`: its message and its extensions (`code`, and `field` or
    `retryAfter` where the HTTP answer has them). Errors without a code of their own are logged here."""
    exc = domain_error(exc)
    code = next((code for cls, code in CODE_OF if isinstance(exc, cls)), None)
    if code is None:
        log.error("graphql_resolver_failed", error_type=type(exc).__name__, exc_info=exc)
        return errors.shown_message(exc, reference=reference), {"code": INTERNAL}
    extensions: dict[str, Any] = {"code": code}
    if isinstance(exc, errors.InvalidInput) and exc.field:
        extensions["field"] = exc.field
    if isinstance(exc, errors.Overloaded | errors.Unavailable):
        extensions["retryAfter"] = max(1, round(exc.retry_after_s))
    return errors.shown_message(exc, reference=reference), extensions


def domain_error(exc: BaseException) -> BaseException:
    """A database that does not answer is `Unavailable` (to retry), as in the REST API; anything else is
    itself."""
    if isinstance(exc, errors.InferlineError) or not db.unavailable(exc):
        return exc
    log.warning("database_unavailable", error_type=type(exc).__name__, error=str(exc)[:300])
    return errors.Unavailable("the database does not answer; try again", retry_after_s=UNAVAILABLE_RETRY_AFTER_S)


def formatted(error: GraphQLError, *, reference: str) -> dict[str, Any]:
    """One entry of a response's `errors`: a resolver's error as `described`, or the document's own
    (syntax, validation, limits) with its code."""
    view: dict[str, Any] = dict(error.formatted)  # message, locations, path
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        view["message"], view["extensions"] = described(original, reference=reference)
        return view
    code = (error.extensions or {}).get("code")
    if code is None:
        code = PARSE_FAILED if isinstance(error, GraphQLSyntaxError) else VALIDATION_FAILED
    view["extensions"] = (error.extensions or {}) | {"code": code}
    return view


def request_error(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    """A response of one error and no data: for a request refused before its document runs."""
    return {"errors": [{"message": message, "extensions": {"code": code} | extensions}]}


def validated(model: type[Model], data: dict[str, Any], *, names: dict[str, str]) -> Model:
    """`data` as `model` (the REST body's own model, so both APIs accept the same), or an `InvalidInput`
    that names the GraphQL argument at fault (`names`: the model's field -> the argument's path)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = graphql_path([str(part) for part in first["loc"]], names)
        raise errors.InvalidInput(f"{where}: {first['msg']}", field=where) from exc


@contextmanager
def arguments_named(names: dict[str, str]) -> Iterator[None]:
    """A use case's `InvalidInput` naming a field of the REST body is re-raised naming the GraphQL
    argument it came from (`cursor` -> `after`; `text_template` -> `input.textTemplate`)."""
    try:
        yield
    except errors.InvalidInput as exc:
        if exc.field is None:
            raise
        where = graphql_path(exc.field.split("."), names)
        if where == exc.field:
            raise
        message = str(exc).replace(exc.field, where, 1)
        raise errors.InvalidInput(message, field=where) from exc


def graphql_path(parts: list[str], names: dict[str, str]) -> str:
    """The REST field path `parts` with its first part renamed (the rest are the caller's own names,
    such as a filter's metadata field)."""
    if not parts:
        return "input"
    return ".".join([names.get(parts[0], parts[0]), *parts[1:]])
