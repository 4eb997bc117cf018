"""The events sent to the broker that it refused (or that overflowed the outbox): an admin's, listed and
retried (docs/events.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from inferline.api.deps import AdminDep, ServicesDep
from inferline.api.openapi import problems
from inferline.events import service

router = APIRouter(prefix="/events", tags=["events"])

EventId = Annotated[str, Path(max_length=36, description="the event's id (its CloudEvents `id`)")]


class DeadLetterOut(BaseModel):
    id: str = Field(description="the event's id, kept when it is retried (consumers dedupe by it)")
    type: str = Field(description="job.succeeded, batch.completed, alert.firing, ...")
    subject: str = Field(description="the job's, batch's or alert's id")
    tenant: str | None
    time: datetime = Field(description="when the change happened")
    reason: str = Field(description="what the broker answered, or why it was never sent")
    failed_at: datetime
    data: dict[str, Any]


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


@router.get("/dead-letters", response_model=DeadLetterPage, responses=problems(403))
async def list_dead_letters(
    services: ServicesDep,
    _admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Events the broker refused (too large, no stream, unroutable) or that overflowed the outbox while the
    broker was away, newest first, each with its reason."""
    items, next_cursor = await service.list_dead_letters(services.engine, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.post("/dead-letters/{event_id}/retry", response_model=DeadLetterOut, responses=problems(403, 404))
async def retry_dead_letter(event_id: EventId, services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    """Put the event back in the outbox (at its end, same id): the publisher sends it with its next batch.
    Refused again, it comes back here."""
    return await service.retry_dead_letter(services.engine, event_id)
