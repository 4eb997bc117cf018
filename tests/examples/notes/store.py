"""The notes table and its SQL. Takes a connection; never commits (use cases own the transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.schema import UTCDateTime

metadata = sa.MetaData()
notes = sa.Table(
    "example_notes",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("words", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Note:
    id: str
    tenant: str
    text: str
    job_id: str
    words: int | None
    created_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "job_id": self.job_id, "words": self.words}


async def insert(conn: AsyncConnection, note: Note) -> None:
    await conn.execute(notes.insert().values(**note.__dict__))


async def get(conn: AsyncConnection, *, tenant: str, note_id: str) -> Note | None:
    row = (await conn.execute(sa.select(notes).where(notes.c.id == note_id, notes.c.tenant == tenant))).first()
    return Note(**row._mapping) if row is not None else None


async def set_words(conn: AsyncConnection, note_id: str, words: int) -> bool:
    result = await conn.execute(notes.update().where(notes.c.id == note_id).values(words=words))
    return bool(result.rowcount)
