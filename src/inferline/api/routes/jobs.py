"""Jobs: submit, read, list, cancel, retry, and a live event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from inferline.api.deps import ServicesDep, TenantDep, services_of
from inferline.api.openapi import problems, returns
from inferline.api.schemas import JobIn, JobOut, JobPage
from inferline.bootstrap import Services
from inferline.errors import Conflict, InvalidInput, NotFound
from inferline.jobs import service
from inferline.jobs.kinds import JSON_FORMAT
from inferline.jobs.model import JobStatus, public_view

router = APIRouter(prefix="/jobs", tags=["jobs"])


_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 200},
    "description": "per tenant: a repeated key with the same body returns the first job",
}


# The result formats of the built-in kinds (json for any; ocr: text, hocr).
_RESULT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result, in the format asked for.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
        },
    }
}
# Before OpenAPI 3.2, the `schema` of an event stream describes each event.
_EVENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, each with the whole job.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "description": "`status` or `progress`"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/JobOut"},
                        },
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
    responses=returns(JobOut, 200, "The job first submitted with this `Idempotency-Key`.") | problems(409, 413),
    openapi_extra={"parameters": [_IDEMPOTENCY_HEADER]},
)
async def submit_job(body: JobIn, request: Request, tenant: TenantDep) -> Response:
    """Queue a job. An `Idempotency-Key` seen before returns that job (200), or 409 if the body differs.
    Bodies over `max_request_bytes` are refused with 413 before they are parsed."""
    services = services_of(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters", field="header.idempotency-key")
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


@router.get("/{job_id}/result", responses=_RESULT | problems(404, 409))
async def job_result(
    job_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    format: Annotated[
        str, Query(max_length=20, description="`json` (any kind) or a format of the job's kind (ocr: text, hocr)")
    ] = JSON_FORMAT,
) -> Response:
    """The result of a succeeded job: `json` for any kind, or a format the job's kind renders (`ocr`:
    `text`, pages separated by form feeds, and `hocr`). 409 while the job has not succeeded; 422 for a
    format its kind does not have."""
    job = await service.get_job(services.engine, tenant=tenant, job_id=job_id)
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        raise Conflict(f"job {job.id} is {job.status.value}; its result exists once it has succeeded")
    if format == JSON_FORMAT:
        return json_response(job.result)
    renderer = services.registry.get(job.kind).renderer(format)
    return Response(renderer.render(job.result), media_type=renderer.media_type)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problems(404, 409))
async def cancel_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """A queued job is canceled at once; a running one stops at its next check (409 if finished)."""
    return public_view(await service.cancel_job(services.engine, tenant=tenant, job_id=job_id))


@router.post("/{job_id}/retry", response_model=JobOut, responses=problems(404, 409))
async def retry_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Re-queue a failed job with a fresh set of attempts (409 unless it failed)."""
    job = await service.retry_job(services.engine, tenant=tenant, job_id=job_id, wakeup=services.wakeup)
    return public_view(job)


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=_EVENTS | problems(404))
async def job_events(job_id: str, services: ServicesDep, tenant: TenantDep) -> StreamingResponse:
    """Server-Sent Events: `status` when the status changes, `progress` when stage or progress
    changes, until the job ends. Each event's data is the whole job."""
    await service.get_job(services.engine, tenant=tenant, job_id=job_id)  # 404 before the stream opens
    return StreamingResponse(
        _events(services, tenant, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(services: Services, tenant: str, job_id: str) -> AsyncIterator[str]:
    last_status: str | None = None
    last_progress: tuple[Any, ...] | None = None
    while True:
        try:
            job = await service.get_job(services.engine, tenant=tenant, job_id=job_id)
        except NotFound:
            return
        view = public_view(job)
        data = json.dumps(view, separators=(",", ":"))
        progress = (job.stage, job.progress, job.detail)
        if job.status.value != last_status:
            last_status = job.status.value
            yield f"event: status\ndata: {data}\n\n"
        elif progress != last_progress:
            yield f"event: progress\ndata: {data}\n\n"
        last_progress = progress
        if job.status.is_terminal:
            return
        await asyncio.sleep(services.settings.events_poll_s)
