"""The models this server can run, their device, processing mode and state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import returns
from inferline.api.schemas import ModelList

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=None, responses=returns(ModelList))
async def list_models(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Every registered model: `state` is unloaded until first use (models load lazily), then ready
    or failed (with `error`)."""
    return {"device": services.models.device, "items": services.models.describe()}
