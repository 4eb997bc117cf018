"""The `notes.count` job kind: counts a note's words and writes the count on its row."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.errors import NonRetryable
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry, ResultRenderer
from tests.examples.notes import store
from tests.examples.notes.deps import NotesDeps

KIND = "notes.count"
RENDERERS = {"text": ResultRenderer("text/plain; charset=utf-8", lambda result: f"{result['words']} words\n")}


class CountInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note_id: str = Field(min_length=1, max_length=36)


async def run_count(deps: NotesDeps, ctx: JobContext, data: CountInput) -> dict[str, Any]:
    await ctx.stage("read")
    async with db.read(deps.engine) as conn:
        note = await store.get(conn, tenant=ctx.tenant, note_id=data.note_id)
    if note is None:
        raise NonRetryable(f"note {data.note_id} not found")
    await ctx.stage("count")
    words = await ctx.to_thread(lambda: min(len(note.text.split()), deps.max_words))
    ctx.raise_if_canceled()
    async with db.write(deps.engine) as conn:
        await store.set_words(conn, note.id, words)
    await ctx.progress(100)
    return {"note_id": note.id, "words": words}


def register(registry: KindRegistry, deps: NotesDeps) -> None:
    async def count(ctx: JobContext, data: CountInput) -> dict[str, Any]:
        return await run_count(deps, ctx, data)

    registry.kind(KIND, input_model=CountInput, renderers=RENDERERS)(count)
