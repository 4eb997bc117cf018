"""Multipart uploads shared by the routes that take files (`/files`, `/ocr`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from inferline import jsonvalues
from inferline.bootstrap import Services
from inferline.errors import InvalidInput, TooLarge
from inferline.files.service import FileInfo, receive_file, record_file
from inferline.files.store import Quota
from inferline.threads import to_thread

MAX_FORM_FIELDS = 20
PARSE_ON_LOOP_BYTES = 256 * 1024  # larger JSON bodies are parsed in a thread (256 KiB: ~4 ms to parse and check)


def multipart_schema(*text_fields: str) -> dict[str, Any]:
    """The OpenAPI schema of a multipart body with a `file` part and optional text fields."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    properties |= {name: {"type": "string"} for name in text_fields}
    return {"schema": {"type": "object", "required": ["file"], "properties": properties}}


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_form(request: Request) -> FormData:
    if not is_multipart(request):
        raise InvalidInput("send the file as multipart/form-data with a part named `file`", field="file")
    try:
        return await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except HTTPException as exc:  # starlette's 400 for a malformed body; admission's 401 and 413 pass through
        if exc.status_code != 400:
            raise
        raise InvalidInput(f"malformed multipart body: {exc.detail}", field="file") from exc


async def store_upload(services: Services, form: FormData, *, tenant: str) -> FileInfo:
    info = await receive_upload(services, form, tenant=tenant)
    await record_file(services.engine, info)
    return info


async def receive_upload(services: Services, form: FormData, *, tenant: str) -> FileInfo:
    """The upload's bytes stored; its row is for the caller to write (`insert_file`)."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("a part named `file` holding the file is required", field="file")
    return await receive_file(
        services.blobs,
        tenant=tenant,
        source=upload.file,
        filename=upload.filename,
        max_bytes=services.settings.max_upload_bytes,
        quota=Quota.from_settings(services.settings),
    )


def text_fields(form: FormData) -> dict[str, Any]:
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def parse_model(model: type[BaseModel], data: Any) -> Any:
    """`data` as `model`, or a 422 naming the first field at fault (for bodies read by hand: multipart
    forms and JSON-or-multipart endpoints, which FastAPI cannot validate for us)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from exc


async def json_body(request: Request, *, max_bytes: int) -> Any:
    """The JSON body of a route that also takes uploads: such a route's body limit is the upload limit, so
    a JSON body is held to `max_bytes` here, counted as it arrives."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise TooLarge(f"a JSON body is limited to {max_bytes} bytes")
    if len(raw) > PARSE_ON_LOOP_BYTES:
        return await to_thread(jsonvalues.loads, raw or b"null", field="body")
    return jsonvalues.loads(raw or b"null", field="body")
