"""Media projects: photos and a song in, a memorial video out. Scoped to the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import FileResponse

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.downloads import OpenedFileResponse
from inferline.api.openapi import problems, returns
from inferline.api.routes.jobs import json_response
from inferline.api.schemas import AssetList, AssetOut, JobOut, ProjectOut, ProjectPage
from inferline.api.uploads import multipart_schema, parse_model, read_form, receive_upload, text_fields
from inferline.bootstrap import Services
from inferline.files.service import finish_upload, open_blob
from inferline.jobs.model import public_view
from inferline.media import assets, service
from inferline.media.assets import AssetFields, AssetPatch
from inferline.media.options import RunOptions
from inferline.media.service import ProjectIn, ProjectPatch
from inferline.threads import to_thread

router = APIRouter(prefix="/projects", tags=["media"])

_UPLOAD = {
    "requestBody": {"required": True, "content": {"multipart/form-data": multipart_schema("caption", "duration_s")}}
}


def _output(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": what, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


# Range requests are answered by starlette's FileResponse; its 416 (a range past the end) is a plain
# `Content-Range: bytes */size` with no body, so it is described in the text, not as a Problem.
_VIDEO = _output("video/mp4", "The MP4 (H.264/AAC).")
_VIDEO[206] = {
    "description": "The part asked for with `Range: bytes=…`, with `Content-Range`.",
    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
}


@router.post("", status_code=201, responses=returns(ProjectOut, 201))
async def create_project(data: ProjectIn, services: ServicesDep, tenant: TenantDep) -> Response:
    """Create a project: `name`, the closing card's `title` and `subtitle`, and `settings` (defaults of
    its runs: the body of `POST /projects/{id}/run`)."""
    project = await service.create_project(services.media, tenant=tenant, data=data)
    response = json_response(project.public_view(None), 201)
    response.headers["Location"] = f"/api/v1/projects/{project.id}"
    return response


@router.get("", response_model=None, responses=returns(ProjectPage))
async def list_projects(
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's projects, newest first; pass `next_cursor` back as `cursor`."""
    found, next_cursor = await service.list_projects(services.media, tenant=tenant, limit=limit, cursor=cursor)
    return {"items": [project.public_view(job) for project, job in found], "next_cursor": next_cursor}


@router.get("/{project_id}", response_model=None, responses=returns(ProjectOut) | problems(404))
async def get_project(project_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The project, its status (from its latest run's job) and that job's stage and progress."""
    project, job = await service.get_project(services.media, tenant=tenant, project_id=project_id)
    return project.public_view(job)


@router.patch("/{project_id}", response_model=None, responses=returns(ProjectOut) | problems(404))
async def update_project(
    project_id: str, data: ProjectPatch, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Change the fields given; the next run uses them."""
    project, job = await service.update_project(services.media, tenant=tenant, project_id=project_id, data=data)
    return project.public_view(job)


@router.delete("/{project_id}", status_code=204, responses=problems(404, 409))
async def delete_project(project_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete the project with its assets' files, video and poster; 409 while it runs (cancel first)."""
    await service.delete_project(services.media, tenant=tenant, project_id=project_id)
    return Response(status_code=204)


@router.post(
    "/{project_id}/assets",
    status_code=201,
    response_model=None,
    openapi_extra=_UPLOAD,
    responses=returns(AssetOut, 201) | problems(404, 409, 413, 415, 503),
)
async def add_asset(project_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> Response:
    """Add a photo (JPEG, PNG, WebP, HEIC; EXIF orientation applied) or a song (MP3, AAC, M4A, WAV, OGG, FLAC)
    as multipart `file`, with optional fields `caption` and (a photo's) `duration_s`. The type is
    sniffed from the content (415 otherwise); a photo is decoded whole (422 if corrupt or truncated;
    413 over `media_max_image_pixels`), and so is a song (422 if it does not decode, or changes its
    sample rate or channels partway; 503 with Retry-After if the busy server could not finish in time).
    It goes last among its kind. 409 while the project runs or at `media_max_assets`, or past the tenant's
    file quota."""
    await service.get_project(services.media, tenant=tenant, project_id=project_id)  # 404 before the bytes
    form = await read_form(request)
    try:
        fields = parse_model(AssetFields, text_fields(form))
        file = await receive_upload(services, form, tenant=tenant)
    finally:
        await form.close()
    refused = True
    try:
        asset = await assets.add_asset(services.media, tenant=tenant, project_id=project_id, file=file, fields=fields)
        refused = False
    finally:
        await finish_upload(services.engine, file, refused=refused)
    response = json_response(asset.public_view(), 201)
    response.headers["Location"] = f"/api/v1/projects/{project_id}/assets/{asset.id}"
    return response


@router.get("/{project_id}/assets", response_model=None, responses=returns(AssetList) | problems(404))
async def list_assets(project_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The project's photos in playing order, then its songs."""
    found = await assets.list_assets(services.media, tenant=tenant, project_id=project_id)
    return {"items": [asset.public_view() for asset in found]}


@router.patch("/{project_id}/assets/{asset_id}", response_model=None, responses=returns(AssetOut) | problems(404, 409))
async def update_asset(
    project_id: str, asset_id: str, data: AssetPatch, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Move an asset to `position` among its kind (the others shift), or change its `caption` or (a
    photo's) `duration_s`. 409 while the project runs."""
    asset = await assets.update_asset(
        services.media, tenant=tenant, project_id=project_id, asset_id=asset_id, data=data
    )
    return asset.public_view()


@router.delete("/{project_id}/assets/{asset_id}", status_code=204, responses=problems(404, 409))
async def delete_asset(project_id: str, asset_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete an asset and its file; 409 while the project runs."""
    await assets.delete_asset(services.media, tenant=tenant, project_id=project_id, asset_id=asset_id)
    return Response(status_code=204)


@router.post(
    "/{project_id}/run", status_code=202, response_model=None, responses=returns(JobOut, 202) | problems(404, 409)
)
async def run_project(
    project_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    options: Annotated[RunOptions | None, Body()] = None,
) -> Response:
    """Start the project's video: 202 with its `pipeline` job (follow it at `/api/v1/jobs/{id}/events`
    or `/runtime`). The options given override the project's `settings`; `music` (an audio asset)
    defaults to the project's first song. 409 while a run has not ended or when it has no photo."""
    asked = options.model_dump(mode="json", exclude_unset=True) if options is not None else {}
    job = await service.run_project(services.media, tenant=tenant, project_id=project_id, asked=asked)
    response = json_response(public_view(job), 202)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response


@router.post("/{project_id}/cancel", response_model=None, responses=returns(JobOut) | problems(404, 409))
async def cancel_project(project_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Cancel the project's run: a queued one at once, a running one within a heartbeat (its ffmpeg is
    stopped and nothing it made is kept). 409 when no run is going."""
    return public_view(await service.cancel_project(services.media, tenant=tenant, project_id=project_id))


async def _output_response(
    services: Services, tenant: str, project_id: str, which: Literal["video", "poster"]
) -> FileResponse:
    info = await service.project_output(services.media, tenant=tenant, project_id=project_id, which=which)
    opened = await to_thread(open_blob, services.blobs, info)  # a new run may replace it meanwhile
    name = f"{project_id}.mp4" if which == "video" else f"{project_id}.jpg"
    # Inline, so a <video> element plays it; FileResponse answers Range requests (206, 416).
    return OpenedFileResponse(opened, media_type=info.content_type, filename=name, content_disposition_type="inline")


@router.get("/{project_id}/video", response_class=FileResponse, responses=_VIDEO | problems(404))
async def project_video(project_id: str, services: ServicesDep, tenant: TenantDep) -> FileResponse:
    """The rendered video, seekable: `Range: bytes=…` gives 206 with `Content-Range`, and 416 (no body)
    for a range that starts past its end. 404 until a run has rendered it."""
    return await _output_response(services, tenant, project_id, "video")


@router.get(
    "/{project_id}/poster",
    response_class=FileResponse,
    responses=_output("image/jpeg", "The poster frame (JPEG).") | problems(404),
)
async def project_poster(project_id: str, services: ServicesDep, tenant: TenantDep) -> FileResponse:
    """A frame of the rendered video, as JPEG; 404 until a run has rendered it."""
    return await _output_response(services, tenant, project_id, "poster")
