"""OCR: one call to upload (or name) a file and queue its OCR job; `Prefer: wait=N` waits for it."""

from __future__ import annotations

import re

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import body_schema, problems, returns
from inferline.api.routes.jobs import json_response
from inferline.api.schemas import JobOut
from inferline.api.uploads import (
    is_multipart,
    json_body,
    multipart_schema,
    parse_model,
    read_form,
    store_upload,
    text_fields,
)
from inferline.bootstrap import Services
from inferline.errors import InvalidInput
from inferline.files.service import delete_file, get_file
from inferline.jobs.model import public_view
from inferline.ocr.options import OcrOptions
from inferline.ocr.service import MAX_WAIT_S, submit_ocr, wait_for

log = structlog.get_logger(__name__)

router = APIRouter(tags=["ocr"])


class OcrJsonIn(OcrOptions):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(min_length=1, max_length=36, description="from POST /api/v1/files")
    priority: int = Field(default=3, ge=1, le=5)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": multipart_schema(
                "engine", "lang", "pages", "page_mode", "dpi", "rotate_pages", "deskew", "layout", "priority"
            ),
            "application/json": {"schema": body_schema(OcrJsonIn)},
        },
    },
    "parameters": [
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "example": "wait=30"},
            "description": f"wait up to N seconds (at most {MAX_WAIT_S:.0f}) and return the job as it is then",
        }
    ],
}


def _wait_s(request: Request) -> float | None:
    match = re.search(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", request.headers.get("prefer", ""))
    return float(match.group(1)) if match else None


@router.post(
    "/ocr",
    status_code=201,
    openapi_extra=_BODY,
    responses=returns(JobOut, 201, "The OCR job, as it is after `Prefer: wait`.") | problems(404, 409, 413, 415),
)
async def ocr(request: Request, services: ServicesDep, tenant: TenantDep) -> Response:
    """Queue an OCR job for an uploaded file (multipart `file` plus option fields) or a stored one (JSON
    `file_id`). Options: `engine` auto|tesseract|rapidocr, `lang` (default kor+eng), `pages` ("1-3,5"),
    `page_mode` auto|force|text-only, `dpi`, `rotate_pages`, `deskew`, `layout` auto|single_column|sparse.
    415 for a type it cannot read (sniffed from the content), 413 over the size, page or pixel limits. Its result:
    `GET /api/v1/jobs/{id}/result?format=json|text|hocr`."""
    uploaded = is_multipart(request)
    if uploaded:
        form = await read_form(request)
        try:
            fields = text_fields(form)
            options = parse_model(OcrJsonIn, {"file_id": "upload", **fields})
            file = await store_upload(services, form, tenant=tenant)
        finally:
            await form.close()
    else:
        body = await json_body(request, max_bytes=services.settings.max_request_bytes)
        if not isinstance(body, dict):
            raise InvalidInput("body: a JSON object with `file_id`, or a multipart upload, is required", field="body")
        options = parse_model(OcrJsonIn, body)
        file = await get_file(services.engine, tenant=tenant, file_id=options.file_id)
    try:
        job = await submit_ocr(
            services.ocr,
            services.submitter,
            tenant=tenant,
            file=file,
            options=OcrOptions(**options.model_dump(include=set(OcrOptions.model_fields))),
            priority=options.priority,
        )
    except BaseException:
        if uploaded:  # a refused upload keeps nothing: its id was never told to the client
            await _forget_upload(services, tenant, file.id)
        raise
    wait_s = _wait_s(request)
    headers = {}
    if wait_s is not None:
        job = await wait_for(services.engine, job, wait_s)
        headers["Preference-Applied"] = f"wait={wait_s:g}"
    response = json_response(public_view(job), 201)
    response.headers.update(headers)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response


async def _forget_upload(services: Services, tenant: str, file_id: str) -> None:
    """Delete a refused upload; a failure here is logged, so the refusal's own error is the one answered."""
    try:
        await delete_file(services.engine, services.blobs, tenant=tenant, file_id=file_id)
    except Exception:
        log.warning("refused_upload_not_deleted", file_id=file_id, exc_info=True)
