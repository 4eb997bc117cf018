"""`/graphql`. POST runs one GraphQL request (`{"query", "variables", "operationName"}` as JSON) for the
caller's tenant; GET serves the GraphiQL page when the `graphql_ide` setting is on (development).

Strawberry runs the schema; its FastAPI router is not used. The order here is the REST API's admission
order (`api/admission.py`): the key is checked before a byte of the body is read, and the body is read
only up to its limit. A request refused before its document runs (no key, a body that is no GraphQL
request) gets the HTTP status the REST API would give it, with the same `errors` body as any other
GraphQL answer; a document that runs is answered 200, its errors (NOT_FOUND, ...) in `errors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from strawberry.exceptions import MissingQueryError
from strawberry.http.ides import get_graphql_ide_html
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import PreExecutionError

from inferline import jsonvalues
from inferline.api import problems
from inferline.api.deps import services_of, tenant_of
from inferline.api.graphql import errors
from inferline.api.graphql.context import context_for
from inferline.api.graphql.limits import QueryLimits
from inferline.api.graphql.schema import Schema, build_schema
from inferline.errors import InvalidInput, TooLarge, UnsupportedMediaType

PATH = "/graphql"
# What strawberry raises for a request it cannot run: an operation name the document lacks, a document
# without operations, an operation type that is not allowed.
_NOT_RUNNABLE = (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)


@dataclass(frozen=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


def router(*, ide: bool, max_body_bytes: int, limits: QueryLimits | None = None) -> APIRouter:
    """The routes of `/graphql`; GET (the GraphiQL page) only with `ide`. A body is held to the smaller of
    `max_body_bytes` (the REST API's, `max_request_bytes`) and the limits' own. Left out of the OpenAPI
    document: the GraphQL schema describes this API (docs/graphql.md)."""
    routes = APIRouter(tags=["graphql"])
    limits = limits or QueryLimits()
    schema = build_schema(limits)
    body_limit_bytes = min(max_body_bytes, limits.max_body_bytes)

    @routes.post(PATH, include_in_schema=False)
    async def graphql(request: Request) -> Response:
        return await run(request, schema, body_limit_bytes)

    if ide:

        @routes.get(PATH, include_in_schema=False)
        async def graphiql() -> HTMLResponse:
            return HTMLResponse(get_graphql_ide_html("graphiql"))

    return routes


async def run(request: Request, schema: Schema, max_body_bytes: int) -> Response:
    services = services_of(request)
    reference = f"request {structlog.contextvars.get_contextvars().get('request_id', '?')}"
    try:
        tenant = await tenant_of(services, request.scope)
        body = parse_request(await read_body(request, max_body_bytes))
        result = await schema.execute(
            body.query,
            variable_values=body.variables,
            context_value=context_for(services, tenant),
            operation_name=body.operation_name,
        )
    except Exception as exc:
        return refused(exc, reference)
    # A document refused before it ran (syntax, validation, limits) has no `data` at all (the spec's
    # "request error"); one that ran has it, null where a field failed.
    answer: dict[str, Any] = {} if isinstance(result, PreExecutionError) else {"data": result.data}
    if result.errors:
        answer["errors"] = [errors.formatted(error, reference=reference) for error in result.errors]
    return _json(answer, 200)


async def read_body(request: Request, max_bytes: int) -> bytes:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("send the GraphQL request as application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > max_bytes):
        raise TooLarge(f"a GraphQL request is limited to {max_bytes} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise TooLarge(f"a GraphQL request is limited to {max_bytes} bytes")
    return bytes(raw)


def parse_request(raw: bytes) -> GraphQLRequest:
    """The request's fields, each of its type, or an `InvalidInput` naming the one at fault."""
    data = jsonvalues.loads(raw or b"null", field="body")
    if not isinstance(data, dict):
        raise InvalidInput("body: a JSON object with `query` (one request; batches are not taken)", field="body")
    query, variables, operation_name = data.get("query"), data.get("variables"), data.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query: a GraphQL document is required", field="query")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidInput("variables: must be a JSON object", field="variables")
    if operation_name is not None and not isinstance(operation_name, str):
        raise InvalidInput("operationName: must be a string", field="operationName")
    return GraphQLRequest(query, variables, operation_name)


def refused(exc: Exception, reference: str) -> Response:
    """A request that did not run: the REST API's status for `exc`, the GraphQL error body."""
    if isinstance(exc, _NOT_RUNNABLE):
        exc = InvalidInput(f"operationName: {exc}", field="operationName")
    elif isinstance(exc, HTTPException) and exc.status_code == 413:  # the admission's count, if it is first
        exc = TooLarge(str(exc.detail))
    elif isinstance(exc, ClientDisconnect):  # no one reads the answer; not a failure of ours to log
        exc = InvalidInput("body: the client left before sending it whole", field="body")
    shown = errors.domain_error(exc)
    message, extensions = errors.described(shown, reference=reference)
    status = next((code for cls, code in problems.STATUS_OF if isinstance(shown, cls)), 500)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retryAfter" in extensions:
        headers["Retry-After"] = str(extensions["retryAfter"])
    return _json(errors.request_error(message, extensions.pop("code"), **extensions), status, headers)


def _json(content: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status, headers=headers, media_type="application/json")
