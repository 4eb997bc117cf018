"""Use cases of the dead letters (admin routes). Each owns its transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.errors import NotFound
from inferline.events import envelope, outbox, store


def letter_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "subject": row["subject"],
        "tenant": row["tenant"] or None,
        "time": row["time"],
        "reason": row["reason"],
        "failed_at": row["failed_at"],
        "data": row["data"],
    }


async def list_dead_letters(
    engine: AsyncEngine, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Dead letters, newest first."""
    async with db.read(engine) as conn:
        rows, next_cursor = await store.dead_letters_page(conn, limit=limit, cursor=cursor)
    return [letter_view(row) for row in rows], next_cursor


async def retry_dead_letter(engine: AsyncEngine, letter_id: str) -> dict[str, Any]:
    """Put a dead letter back at the end of the outbox, with its id (consumers dedupe by it): the
    publisher sends it with the next batch."""
    async with db.write(engine) as conn:
        row = await store.take_dead_letter(conn, letter_id)
        if row is None:
            raise NotFound(f"dead letter {letter_id} not found")
        await outbox.add(conn, [_stored(row)])
    return letter_view(row)


async def retry_dead_letters(
    engine: AsyncEngine, *, type_: str | None, failed_before: datetime | None, limit: int
) -> list[str]:
    """Put up to `limit` dead letters back in the outbox, oldest failure first, in one row: the publisher
    sends them together, in that order. Returns their ids."""
    async with db.write(engine) as conn:
        rows = await store.take_dead_letters(conn, type_=type_, failed_before=failed_before, limit=limit)
        if rows:
            await outbox.add(conn, [_stored(row) for row in rows])
    return [row["id"] for row in rows]


def _stored(row: dict[str, Any]) -> str:
    event = (row["id"], row["type"], row["subject"], row["tenant"], row["time"], row["data"])
    return envelope.stored(*event, any_keys=True)
