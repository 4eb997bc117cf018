"""Notes over HTTP: thin calls into the use cases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import problems
from tests.examples.notes import service
from tests.examples.notes.deps import deps_of

router = APIRouter(prefix="/notes", tags=["notes"])


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000)


@router.post("", status_code=201)
async def add_note(body: NoteIn, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Store a note and queue the job that counts its words (`job_id`)."""
    note = await service.add_note(deps_of(services), tenant=tenant, text=body.text)
    return note.public_view()


@router.get("/{note_id}", responses=problems(404))
async def get_note(note_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return (await service.get_note(deps_of(services), tenant=tenant, note_id=note_id)).public_view()
