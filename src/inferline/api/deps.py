"""FastAPI dependencies: the process's services and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.types import Scope

from inferline.bootstrap import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs sync dependencies in a thread pool, a thread hop per request.
    return services_of(request)


def bearer_key(headers: Headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


async def tenant_of(services: Services, scope: Scope) -> str:
    """The caller's tenant, checked once per request: the admission of the body (`api/admission.py`)
    checks it before the first byte is read, and keeps it in the request's state."""
    state = scope.setdefault("state", {})
    tenant = state.get("tenant")
    if tenant is None:
        tenant = state["tenant"] = await services.auth.tenant_for(bearer_key(Headers(scope=scope)))
    return str(tenant)


async def get_tenant(request: Request) -> str:
    return await tenant_of(services_of(request), request.scope)


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]
