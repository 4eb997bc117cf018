"""Use cases of the notes workload. Each owns its transaction."""

from __future__ import annotations

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NotFound
from inferline.ids import new_id
from inferline.jobs.submission import JobRequest
from tests.examples.notes import store
from tests.examples.notes.deps import NotesDeps
from tests.examples.notes.kind import KIND
from tests.examples.notes.store import Note


async def add_note(deps: NotesDeps, *, tenant: str, text: str) -> Note:
    """The note and its counting job, in one transaction: neither is ever there without the other."""
    note_id = new_id()
    async with deps.submitter.transaction() as tx:
        job = await tx.add(JobRequest(kind=KIND, input={"note_id": note_id}), tenant=tenant)
        note = Note(id=note_id, tenant=tenant, text=text, job_id=job.id, words=None, created_at=utcnow())
        await store.insert(tx.conn, note)
    return note


async def get_note(deps: NotesDeps, *, tenant: str, note_id: str) -> Note:
    async with db.read(deps.engine) as conn:
        note = await store.get(conn, tenant=tenant, note_id=note_id)
    if note is None:  # another tenant's note is not found either
        raise NotFound(f"note {note_id} not found")
    return note
