"""FastAPI dependencies: the process's services and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer
from fastapi.security.base import SecurityBase
from starlette.datastructures import Headers
from starlette.types import Scope

from inferline.bootstrap import Services
from inferline.errors import Forbidden


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
        client = scope.get("client")
        address = str(client[0]) if client else ""
        tenant = state["tenant"] = await services.auth.tenant_for(bearer_key(Headers(scope=scope)), client=address)
    return str(tenant)


class BearerKey(SecurityBase):
    """The caller's tenant, as a security scheme: the OpenAPI document then says, on every route that
    depends on it, that the route needs the key (FastAPI reads the scheme from the dependency)."""

    def __init__(self) -> None:
        self.model = HTTPBearer(description="an API key: `Authorization: Bearer <key>`")
        self.scheme_name = "bearer"

    async def __call__(self, request: Request) -> str:
        return await tenant_of(services_of(request), request.scope)


get_tenant = BearerKey()  # a dependency (`TenantDep`), and awaitable as `await get_tenant(request)`

ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]


async def admin_tenant(services: ServicesDep, tenant: TenantDep) -> str:
    """The caller's tenant if it is an admin's (`admin_tenants`), else 403."""
    if not services.monitor.is_admin(tenant):
        raise Forbidden("this is the whole system's: an admin key (a tenant of `admin_tenants`) may use it")
    return tenant


AdminDep = Annotated[str, Depends(admin_tenant)]
