"""Files: upload (multipart), metadata, and the bytes back. Scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.uploads import multipart_schema, read_form, store_upload
from inferline.files.service import blob_path, get_file

router = APIRouter(prefix="/files", tags=["files"])

_MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": multipart_schema()}}}


@router.post("", status_code=201, openapi_extra=_MULTIPART)
async def upload_file(request: Request, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Store a file (multipart part `file`). Its type is sniffed from its content; identical bytes are
    stored once (content-addressed by sha256). Over `max_upload_bytes`: 413."""
    form = await read_form(request)
    try:
        info = await store_upload(services, form, tenant=tenant)
    finally:
        await form.close()
    return info.public_view()


@router.get("/{file_id}")
async def file_metadata(file_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return (await get_file(services.engine, tenant=tenant, file_id=file_id)).public_view()


@router.get("/{file_id}/content")
async def file_content(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    info = await get_file(services.engine, tenant=tenant, file_id=file_id)
    return FileResponse(
        blob_path(services.blobs, info), media_type=info.content_type, filename=info.filename or info.id
    )
