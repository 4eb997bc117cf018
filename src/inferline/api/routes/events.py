"""The events sent to the broker that it refused (or that overflowed the outbox): an admin's, listed and
retried (docs/events.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from inferline.api.deps import AdminDep, ServicesDep
from inferline.api.openapi import problems
from inferline.events import service

router = APIRouter(prefix="/events", tags=["events"])

# A bulk retry is one transaction that reads, deletes and re-inserts its letters: bounded per call.
MAX_RETRY_MANY = 1000

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


class RetryManyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, max_length=100, description="only letters of this event type")
    failed_before: AwareDatetime | None = Field(
        default=None, description="only letters that failed before this time (with its offset: `…Z`)"
    )
    limit: int = Field(default=500, ge=1, le=MAX_RETRY_MANY, description="at most this many, oldest failure first")


class RetryManyOut(BaseModel):
    retried: int = Field(description="letters put back in the outbox; call again while this equals `limit`")
    ids: list[str] = Field(description="their event ids, in the order they are sent")


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


@router.post("/dead-letters/retry", response_model=RetryManyOut, responses=problems(403, 422))
async def retry_dead_letters(body: RetryManyIn, services: ServicesDep, _admin: AdminDep) -> dict[str, Any]:
    """Put many dead letters back in the outbox at once (after a broker's cause is fixed), oldest failure
    first, each with its id: all of them, or those of one `type` or failed before `failed_before`, at most
    `limit` a call. Refused again, they come back here."""
    ids = await service.retry_dead_letters(
        services.engine, type_=body.type, failed_before=body.failed_before, limit=body.limit
    )
    return {"retried": len(ids), "ids": ids}
