"""The OpenAPI document, complete: SDK generators and API users read it, and the fuzz test
(`tests/api/test_fuzz.py`) holds every response to it.

- `problems(404, 409)`: the `responses=` of a route's error statuses, each an `application/problem+json`
  body of the one `Problem` schema (what `api/problems.py` writes).
- `body_schema(Model)`: a `$ref` to a request body that a route reads by hand (JSON or multipart), with
  the model and the models it uses put under `components/schemas` (pydantic's own `$defs` would not
  resolve inside the document).
- `install(app)`: the document gains those schemas; every route that needs the caller's key (`TenantDep`,
  a security scheme) its 401, 429 (too many unknown keys from the client) and 503 (the key could not be
  checked); every route with input its 422
  (FastAPI's own 422 schema is not what `api/problems.py` sends); every `Problem` response the media type
  `application/problem+json`. So a route lists only its other errors, and a plugin's routes are
  documented alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"
REF_PREFIX = "#/components/schemas/"


class FieldError(BaseModel):
    field: str = Field(description="where, e.g. `body.input.n` or `query.limit`")
    message: str


class Problem(BaseModel):
    """An error (RFC 9457)."""

    type: str = Field(description="`about:blank`: the status says what kind of error it is")
    title: str = Field(description="the status's phrase")
    status: int
    detail: str = Field(description="what is wrong, for people")
    field: str | None = Field(default=None, description="the input at fault (422)")
    errors: list[FieldError] | None = Field(default=None, description="every invalid field (422 from validation)")


_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}},
}

DESCRIPTIONS: dict[int, str] = {
    401: "The API key is missing or unknown.",
    403: "The API key is valid but not an admin's (`admin_tenants`): this is the whole system's.",
    404: "Not found for this tenant (another tenant's resources are not found either).",
    409: "The request conflicts with the resource's current state.",
    413: "The request is over a size limit (its `detail` names the limit).",
    415: "The file's type, sniffed from its content, is not accepted here.",
    422: "The input is invalid; `field` names where.",
    429: "Overloaded, or too many unknown API keys from this client: retry after `Retry-After` seconds.",
    503: "Not ready: the database does not answer, or the API key could not be checked; retry after `Retry-After`.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses: each a `Problem` body, described once here."""
    return {
        status: {"model": Problem, "description": DESCRIPTIONS[status]}
        | ({"headers": _HEADERS[status]} if status in _HEADERS else {})
        for status in statuses
    }


def returns(model: type[BaseModel], status: int = 200, description: str = "") -> dict[int | str, dict[str, Any]]:
    """`responses=` entry of a body the route writes itself: documented, not validated again (a route that
    returns a dict says `response_model=None`, or FastAPI would document and check its annotation)."""
    return {status: {"model": model, "description": description or model.__doc__ or "Successful Response"}}


_BODY_MODELS: dict[str, type[BaseModel]] = {}


def body_schema(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to `model`'s schema, for a request body given through `openapi_extra`."""
    _BODY_MODELS[model.__name__] = model
    return {"$ref": REF_PREFIX + model.__name__}


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI leaves out or gets wrong for this app, put right in `document` (FastAPI's own)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: list[type[BaseModel]] = [Problem, *_BODY_MODELS.values()]
    for model in models:
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for operation in _operations(document):
        responses = operation.setdefault("responses", {})
        for response in responses.values():
            _as_problem_json(response)
        # problems.py writes every 422, FastAPI's validation errors too; a body read by hand has one as well.
        if _is_default_validation_error(responses.get("422")) or "requestBody" in operation:
            responses["422"] = _problem_response(422)
        if operation.get("security"):  # the routes that depend on the caller's key (deps.BearerKey)
            responses.setdefault("401", _problem_response(401))
            responses.setdefault("429", _problem_response(429))  # too many unknown keys from this client
            responses.setdefault("503", _problem_response(503))  # admission: the key could not be checked
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF_PREFIX + Problem.__name__}}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in document.get("paths", {}).values():
        yield from item.values()


def _as_problem_json(response: dict[str, Any]) -> None:
    """FastAPI writes a response model under the route's media type (JSON, an event stream); a `Problem`
    goes out as problem+json, whatever the route's success media type."""
    problem = {"schema": {"$ref": REF_PREFIX + Problem.__name__}}
    if problem in response.get("content", {}).values():
        response["content"] = {PROBLEM_MEDIA_TYPE: problem}


def _is_default_validation_error(response: dict[str, Any] | None) -> bool:
    schema = (response or {}).get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == REF_PREFIX + "HTTPValidationError")
