"""Bulk batches: the records of an uploaded JSONL, CSV or Parquet file into a search collection. Scoped to the
caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import problems, returns
from inferline.api.routes.jobs import json_response
from inferline.api.schemas import BatchOut, BatchPage
from inferline.batches import service
from inferline.batches.service import BatchIn

router = APIRouter(prefix="/batches", tags=["batches"])


@router.post("", status_code=202, responses=returns(BatchOut, 202) | problems(404, 409, 415, 429))
async def create_batch(data: BatchIn, services: ServicesDep, tenant: TenantDep) -> Response:
    """Upsert the records of `input_file_id` (JSONL, CSV with a header, or Parquet) into `collection` by their
    `custom_id` (or the `id_field` given): 202 with the batch, which runs as a job. `text_template`
    (e.g. `"{title}\\n{body}"`) makes each record's text from its fields; `chunk_records` records are done
    between checkpoints; `webhook` receives `batch.completed`."""
    batch, job = await service.create_batch(services.batches, tenant=tenant, data=data)
    response = json_response(batch.public_view(job), 202)
    response.headers["Location"] = f"/api/v1/batches/{batch.id}"
    return response


@router.get("", response_model=None, responses=returns(BatchPage))
async def list_batches(
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's batches, newest first; pass `next_cursor` back as `cursor`."""
    found, next_cursor = await service.list_batches(services.batches, tenant=tenant, limit=limit, cursor=cursor)
    return {"items": [batch.public_view(job) for batch, job in found], "next_cursor": next_cursor}


@router.get("/{batch_id}", response_model=None, responses=returns(BatchOut) | problems(404))
async def get_batch(batch_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The batch: its status, `request_counts` (up to its last checkpoint) and, once done, its files."""
    batch, job = await service.get_batch(services.batches, tenant=tenant, batch_id=batch_id)
    return batch.public_view(job)


@router.post("/{batch_id}/cancel", response_model=None, responses=returns(BatchOut) | problems(404, 409))
async def cancel_batch(batch_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Stop the batch (`canceling`, then `canceled`); the records done stay in the collection."""
    batch, job = await service.cancel_batch(services.batches, tenant=tenant, batch_id=batch_id)
    return batch.public_view(job)


@router.post("/{batch_id}/retry", status_code=202, responses=returns(BatchOut, 202) | problems(404, 409, 429))
async def retry_batch(batch_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """A new batch of only the records that failed in this one (409 while it runs or if none failed)."""
    batch, job = await service.retry_batch(services.batches, tenant=tenant, batch_id=batch_id)
    response = json_response(batch.public_view(job), 202)
    response.headers["Location"] = f"/api/v1/batches/{batch.id}"
    return response
