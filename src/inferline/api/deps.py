"""FastAPI dependencies: the process's services and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer
from fastapi.security.base import SecurityBase

from inferline.bootstrap import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs sync dependencies in a thread pool, a thread hop per request.
    return services_of(request)


async def get_tenant(request: Request) -> str:
    services = services_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    tenant = await services.auth.tenant_for(key.strip() if scheme.lower() == "bearer" else None)
    request.state.tenant = tenant
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]


class BearerKey(SecurityBase):
    """`get_tenant` as a security scheme: the OpenAPI document then says, on every route that depends on
    it, that the route needs the key (FastAPI reads the scheme from the dependency)."""

    def __init__(self) -> None:
        self.model = HTTPBearer(description="an API key: `Authorization: Bearer <key>`")
        self.scheme_name = "bearer"

    async def __call__(self, request: Request) -> str:
        return await get_tenant(request)


TenantDep = Annotated[str, Depends(BearerKey())]
