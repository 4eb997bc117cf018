"""Admission of a request's body: no byte of it is read before its route has admitted the caller, and it
is read only up to its route's limit.

FastAPI reads a route's body before it solves the route's dependencies, so a `TenantDep` alone lets
anyone without a key make the server take in a whole body before the 401. Here the first pull of the body
(the first `receive()`, made after routing, when `scope["route"]` names the route) admits it first:

- a route that takes a `TenantDep` has its caller's key checked: without a valid one, a 401 and not a
  byte read (the tenant is kept in the request's state; `get_tenant` does not ask again);
- the limit is the route's, never a guess from the client's `Content-Type`: routes that document a
  multipart body (uploads) get `max_upload_bytes` plus the multipart framing, every other route
  `max_request_bytes`. A declared `Content-Length` over it is refused at once, a streamed body as soon as
  it passes it.

Errors are raised as `HTTPException`s: FastAPI passes those from body reading through to the problem
handler (any other exception there becomes its generic 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferline.api.deps import get_tenant, tenant_of
from inferline.errors import Overloaded, Unauthorized

log = structlog.get_logger(__name__)

MULTIPART_FRAMING_BYTES = 64 * 1024  # boundaries and part headers around the file
RETRY_LATER = {"Retry-After": "5"}


@dataclass(frozen=True)
class BodyPolicy:
    needs_tenant: bool
    max_body_bytes: int


def takes_uploads(route: APIRoute) -> bool:
    """The route documents a multipart body (`openapi_extra`, as the upload routes do) or declares form
    parameters (FastAPI's `File`/`Form`)."""
    content = (route.openapi_extra or {}).get("requestBody", {}).get("content", {})
    form_body = route.body_field is not None and isinstance(route.body_field.field_info, params.Form)
    return "multipart/form-data" in content or form_body


def needs_tenant(dependant: Dependant) -> bool:
    """`get_tenant` is among the route's dependencies, at any depth."""
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is get_tenant:
            return True
        pending.extend(current.dependencies)
    return False


class Admission:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes + MULTIPART_FRAMING_BYTES
        self._policies: dict[int, BodyPolicy] = {}  # by id(route): routes live as long as the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, _Gate(self, scope, receive).receive, send)

    def policy(self, route: Any) -> BodyPolicy:
        if not isinstance(route, APIRoute):  # no route (404) or not ours: nothing to authenticate
            return BodyPolicy(needs_tenant=False, max_body_bytes=self.max_body_bytes)
        policy = self._policies.get(id(route))
        if policy is None:
            limit = self.max_upload_bytes if takes_uploads(route) else self.max_body_bytes
            policy = self._policies[id(route)] = BodyPolicy(needs_tenant(route.dependant), limit)
        return policy


class _Gate:
    """The request's `receive`: admits the body on its first call, then counts it against the limit."""

    def __init__(self, admission: Admission, scope: Scope, receive: Receive) -> None:
        self.admission = admission
        self.scope = scope
        self._receive = receive
        self.limit: int | None = None  # set once admitted
        self.received = 0

    async def receive(self) -> Message:
        if self.limit is None:
            self.limit = await self._admit()
        message = await self._receive()
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            raise HTTPException(413, f"request body is over the limit of {self.limit} bytes")
        return message

    async def _admit(self) -> int:
        policy = self.admission.policy(self.scope.get("route"))
        if policy.needs_tenant:
            try:
                await tenant_of(self.scope["app"].state.services, self.scope)
            except Unauthorized as exc:
                raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
            except Overloaded as exc:
                retry_after = str(max(1, round(exc.retry_after_s)))
                raise HTTPException(429, str(exc), headers={"Retry-After": retry_after}) from exc
            except Exception as exc:  # the key could not be checked (database down): not the client's fault
                log.warning("admission_key_check_failed", exc_info=True)
                raise HTTPException(503, "the API key could not be checked; try again", headers=RETRY_LATER) from exc
        declared = dict(self.scope["headers"]).get(b"content-length", b"")
        # More than 18 digits is over any limit (and int() refuses past 4300 digits).
        if declared.isdigit() and (len(declared) > 18 or int(declared) > policy.max_body_bytes):
            raise HTTPException(413, f"request body is over the limit of {policy.max_body_bytes} bytes")
        return policy.max_body_bytes
