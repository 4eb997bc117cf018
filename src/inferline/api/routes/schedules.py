"""Cron schedules that submit a job from a template at each tick."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import problems, returns
from inferline.api.routes.jobs import json_response
from inferline.api.schemas import JobOut, ScheduleIn, ScheduleOut, SchedulePage
from inferline.jobs import schedules
from inferline.jobs.model import public_view

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post("", status_code=201, response_model=ScheduleOut, responses=problems(404, 413, 422))
async def create_schedule(body: ScheduleIn, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Make a schedule. Its template is refused now as its first tick would be: 404 for a file or a
    collection the tenant does not have, 422 where the kind refuses it (a drop folder not set up). A
    conflict of the moment (a project's run in progress) does not refuse it."""
    schedule = await schedules.create_schedule(
        services.engine,
        services.registry,
        tenant=tenant,
        cron=body.cron,
        template=body.to_request(),
        name=body.name,
        outbound=services.submitter.outbound,
    )
    return asdict(schedule)


@router.get("", response_model=SchedulePage)
async def list_schedules(
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    items, next_cursor = await schedules.list_schedules(services.engine, tenant=tenant, limit=limit, cursor=cursor)
    return {"items": [asdict(item) for item in items], "next_cursor": next_cursor}


@router.post(
    "/{schedule_id}/run",
    status_code=202,
    response_model=None,
    responses=returns(JobOut, 202, "The job queued now.") | problems(404, 409, 413, 415, 422),
)
async def run_schedule(schedule_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Queue the schedule's job now (the manual trigger); its next tick stays as it was. 404 for a missing
    schedule or another tenant's; 404 or 422 when its template is refused now (a file or collection
    deleted, a drop folder no longer set up), as `POST /jobs` would answer."""
    job = await schedules.run_schedule(services.submitter, tenant=tenant, schedule_id=schedule_id)
    return json_response(public_view(job), 202)


@router.delete("/{schedule_id}", status_code=204, responses=problems(404))
async def delete_schedule(schedule_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    await schedules.delete_schedule(services.engine, tenant=tenant, schedule_id=schedule_id)
    return Response(status_code=204)
