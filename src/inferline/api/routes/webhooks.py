"""The tenant's webhook signing secret."""

from __future__ import annotations

from fastapi import APIRouter

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.schemas import WebhookSecretOut
from inferline.tenants import webhook_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.get("/secret", response_model=WebhookSecretOut)
async def get_webhook_secret(services: ServicesDep, tenant: TenantDep) -> dict[str, str]:
    """The tenant's signing secret for webhook deliveries (Standard Webhooks, `whsec_...`)."""
    return {"secret": await webhook_secret(services.engine, tenant)}
