"""Jobs: submit, read, list, cancel, retry, and a live event stream."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from inferline.api import events
from inferline.api.deps import ServicesDep, TenantDep, services_of
from inferline.api.events import EventStream, StreamLimits
from inferline.api.openapi import problems, returns
from inferline.api.schemas import JobIn, JobOut, JobPage, JobRuntimeOut
from inferline.errors import Conflict
from inferline.jobs import service
from inferline.jobs.kinds import JSON_FORMAT
from inferline.jobs.model import JobStatus, public_view
from inferline.jobs.submission import tenant_idempotency_key
from inferline.threads import to_thread

router = APIRouter(prefix="/jobs", tags=["jobs"])


_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
    "description": "per tenant: a repeated key with the same body returns the first job. 1 to 200 printable "
    "ASCII characters; keys starting with `inferline:` are reserved for the server's own jobs (422)",
}


# The result formats of the built-in kinds (json for any; ocr: text, hocr, pdf).
_RESULT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result, in the format asked for.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_RESULT_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: problems(409)[409]
    | {
        "description": "The job has not succeeded (yet), or a format made from its input file (`ocr`: `pdf`) "
        "was asked for after the file was deleted."
    }
}
_CHUNK_BYTES = 1 << 20
# Before OpenAPI 3.2, the `schema` of an event stream describes each event.
_EVENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, each with the whole job.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string", "description": "`status` or `progress`"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/JobOut"},
                        },
                        "id": {"type": "string", "description": "send back as `Last-Event-ID` to resume"},
                        "retry": {"type": "integer", "description": "ms: the stream's lifetime ended; reconnect"},
                    },
                }
            }
        },
    }
}


# The hot path of the API: services and the header are read here rather than through FastAPI
# dependencies, whose solving cost 12% of the request (docs/benchmarks.md). The tenant stays a
# dependency so that authentication comes before body validation (401 before 422).
@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=returns(JobOut, 200, "The job first submitted with this `Idempotency-Key`.") | problems(404, 409, 413),
    openapi_extra={"parameters": [_IDEMPOTENCY_HEADER]},
)
async def submit_job(body: JobIn, request: Request, tenant: TenantDep) -> Response:
    """Queue a job. An `Idempotency-Key` seen before returns that job (200), or 409 if the body differs.
    Bodies over `max_request_bytes` are refused with 413 before they are parsed. An `input.file_id` names
    one of the tenant's files (404 if there is none): the file cannot be deleted while the job waits or
    runs."""
    services = services_of(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        tenant_idempotency_key(idempotency_key, field="header.idempotency-key")
    job, created = await services.submitter.submit(body.to_request(), tenant=tenant, idempotency_key=idempotency_key)
    return json_response(public_view(job), 201 if created else 200)


def json_response(content: dict[str, Any], status_code: int = 200) -> Response:
    """Serialized once, here: the view is already JSON-safe, so FastAPI's re-validation is skipped."""
    return Response(json.dumps(content, separators=(",", ":")), status_code, media_type="application/json")


@router.get("", response_model=JobPage)
async def list_jobs(
    services: ServicesDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    items, next_cursor = await service.list_jobs(
        services.engine, tenant=tenant, status=status, kind=kind, limit=limit, cursor=cursor
    )
    return {"items": [public_view(job) for job in items], "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobOut, responses=problems(404))
async def get_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    return json_response(public_view(await service.get_job(services.engine, tenant=tenant, job_id=job_id)))


@router.get("/{job_id}/runtime", response_model=None, responses=returns(JobRuntimeOut) | problems(404))
async def job_runtime(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The job's runtime view, for any kind: its `stage` (the kind's own names), `progress_percent`
    (0 to 100), `detail_message` and `cancel_requested`, with its `status`."""
    job = await service.get_job(services.engine, tenant=tenant, job_id=job_id)
    return {
        "status": job.status.value,
        "stage": job.stage,
        "progress_percent": job.progress,
        "detail_message": job.detail,
        "cancel_requested": job.cancel_requested,
    }


@router.get("/{job_id}/result", responses=_RESULT | problems(404) | _RESULT_CONFLICT)
async def job_result(
    job_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    format: Annotated[
        str,
        Query(max_length=20, description="`json` (any kind) or a format of the job's kind (ocr: text, hocr, pdf)"),
    ] = JSON_FORMAT,
) -> Response:
    """The result of a succeeded job: `json` for any kind, or a format the job's kind renders (`ocr`:
    `text`, pages separated by form feeds; `hocr`; `pdf`, the searchable PDF: the pages read with the
    recognized text on them, invisible). 409 while the job has not succeeded, or for a `pdf` whose input
    file has been deleted since; 422 for a format its kind does not have, or a `pdf` that cannot be built
    within `INFERLINE_OCR_PAGE_MEMORY_MB` and 600 s (a page of the file that takes more to load); 429 while
    the tenant's previous `pdf` is being built, or two others'."""
    job = await service.get_job(services.engine, tenant=tenant, job_id=job_id)
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        raise Conflict(f"job {job.id} is {job.status.value}; its result exists once it has succeeded")
    if format == JSON_FORMAT:
        return json_response(job.result)
    renderer = services.registry.get(job.kind).renderer(format)
    body = await renderer.rendering(job)
    if isinstance(body, str | bytes):
        return Response(body, media_type=renderer.media_type)
    return _file_response(body, renderer.media_type)


def _file_response(file: BinaryIO, media_type: str) -> StreamingResponse:
    """An open file sent from where it stands, read on a thread, and closed once sent (or abandoned)."""
    size = os.fstat(file.fileno()).st_size - file.tell()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await to_thread(file.read, _CHUNK_BYTES):
                yield chunk
        finally:
            file.close()

    return StreamingResponse(chunks(), media_type=media_type, headers={"Content-Length": str(size)})


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problems(404, 409))
async def cancel_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """A queued job is canceled at once; a running one stops at its next check (409 if finished)."""
    return public_view(await service.cancel_job(services.engine, tenant=tenant, job_id=job_id))


@router.post("/{job_id}/retry", response_model=JobOut, responses=problems(404, 409))
async def retry_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Re-queue a failed job with a fresh set of attempts (409 unless it failed)."""
    job = await service.retry_job(
        services.engine, tenant=tenant, job_id=job_id, wakeup=services.wakeup, registry=services.registry
    )
    return public_view(job)


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 100},
    "description": "the `id` of the last event received: the stream resumes with what changed since",
}


@router.get(
    "/{job_id}/events",
    status_code=200,
    response_class=EventStream,
    responses=_EVENTS | problems(404, 429),
    openapi_extra={"parameters": [_LAST_EVENT_ID]},
)
async def job_events(job_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> EventStream:
    """Server-Sent Events: `status` when the status changes, `progress` when stage or progress
    changes, until the job ends. Each event's data is the whole job, and its `id` can be sent back as
    `Last-Event-ID` to resume. A `: ping` comment comes every `events_keepalive_s` without events; after
    `events_max_stream_s` the stream ends with a `retry:` hint (reconnect with `Last-Event-ID`). Over
    `events_max_streams_per_tenant` open streams (per API process): 429 with `Retry-After`."""
    job = await service.get_job(services.engine, tenant=tenant, job_id=job_id)  # 404 before the stream opens
    settings = services.settings
    limits = StreamLimits(keepalive_s=settings.events_keepalive_s, lifetime_s=settings.events_max_stream_s)
    last_event_id = request.headers.get("last-event-id")
    services.watchers.admit(tenant)
    return EventStream(
        events.job_events(services.watchers, job, last_event_id=last_event_id, limits=limits),
        on_close=functools.partial(services.watchers.release, tenant),
    )
