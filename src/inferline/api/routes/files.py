"""Files: upload (multipart), list, metadata, the bytes back, delete. Scoped to the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.downloads import OpenedFileResponse
from inferline.api.openapi import problems, returns
from inferline.api.schemas import FileOut, FilePage
from inferline.api.uploads import multipart_schema, read_form, store_upload
from inferline.files import service
from inferline.files.service import get_file, open_blob
from inferline.threads import to_thread

router = APIRouter(prefix="/files", tags=["files"])

_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, of its sniffed `content_type`.",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": multipart_schema()}}}


@router.post(
    "",
    status_code=201,
    response_model=None,
    openapi_extra=_MULTIPART,
    responses=returns(FileOut, 201) | problems(409, 413),
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


@router.get("", response_model=None, responses=returns(FilePage))
async def list_files(
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's files, newest first, those its collections' documents were made from included (all
    count toward its quota); pass `next_cursor` back as `cursor` for the next page."""
    items, next_cursor = await service.list_files(services.engine, tenant=tenant, limit=limit, cursor=cursor)
    return {"items": [info.public_view() for info in items], "next_cursor": next_cursor}


@router.delete("/{file_id}", status_code=204, responses=problems(404, 409))
async def delete_file(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a file; its bytes go too unless another file has the same. 409 while a queued or running
    job names it (`file_id`) or a collection's document is made from it (delete the document first)."""
    await service.delete_file(services.engine, services.blobs, tenant=tenant, file_id=file_id)
    return Response(status_code=204)


@router.get("/{file_id}", response_model=None, responses=returns(FileOut) | problems(404))
async def file_metadata(file_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return (await get_file(services.engine, tenant=tenant, file_id=file_id)).public_view()


@router.get("/{file_id}/content", response_class=FileResponse, responses=_CONTENT | problems(404))
async def file_content(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    info = await get_file(services.engine, tenant=tenant, file_id=file_id)
    opened = await to_thread(open_blob, services.blobs, info)  # 404 if a delete came first
    return OpenedFileResponse(opened, media_type=info.content_type, filename=info.filename or info.id)
