"""Files: upload (multipart), metadata, and the bytes back. Scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.problems import PROBLEM_RESPONSE
from inferline.api.uploads import multipart_schema, read_form, store_upload
from inferline.files import service
from inferline.files.service import blob_path, get_file

router = APIRouter(prefix="/files", tags=["files"])

_MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": multipart_schema()}}}


@router.post(
    "",
    status_code=201,
    openapi_extra=_MULTIPART,
    responses={409: PROBLEM_RESPONSE, 413: PROBLEM_RESPONSE, 422: PROBLEM_RESPONSE},
)
async def upload_file(request: Request, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Store a file (multipart part `file`). Its type is sniffed from its content; identical bytes are
    stored once (content-addressed by sha256). Over `max_upload_bytes`: 413. Past the tenant's quota
    (`files_max_bytes_per_tenant`, `files_max_per_tenant`): 409, naming the limit."""
    form = await read_form(request)
    try:
        info = await store_upload(services, form, tenant=tenant)
    finally:
        await form.close()
    return info.public_view()


@router.delete("/{file_id}", status_code=204, responses={404: PROBLEM_RESPONSE, 409: PROBLEM_RESPONSE})
async def delete_file(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a file; its bytes go too unless another file has the same. 409 while a queued or running
    job names it (`file_id`) or a collection's document is made from it (delete the document first)."""
    await service.delete_file(services.engine, services.blobs, tenant=tenant, file_id=file_id)
    return Response(status_code=204)


@router.get("/{file_id}", responses={404: PROBLEM_RESPONSE})
async def file_metadata(file_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return (await get_file(services.engine, tenant=tenant, file_id=file_id)).public_view()


@router.get("/{file_id}/content", responses={404: PROBLEM_RESPONSE})
async def file_content(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    info = await get_file(services.engine, tenant=tenant, file_id=file_id)
    return FileResponse(
        blob_path(services.blobs, info), media_type=info.content_type, filename=info.filename or info.id
    )
