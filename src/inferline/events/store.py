"""SQL of the outbox and its dead letters, for the publisher and the admin routes; never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import paging
from inferline.schema import event_dead_letters, event_outbox

_EVENT_COLUMNS = ("id", "type", "subject", "tenant", "time", "data")
_UNSENT = event_outbox.c.sent_at.is_(None)


async def unsent(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """The oldest unsent events, in outbox order."""
    query = sa.select(event_outbox).where(_UNSENT).order_by(event_outbox.c.seq).limit(limit)
    return [dict(row) for row in (await conn.execute(query)).mappings()]


async def unsent_count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(event_outbox).where(_UNSENT)) or 0)


async def mark_sent(conn: AsyncConnection, seqs: Sequence[int], now: datetime) -> None:
    if seqs:
        o = event_outbox
        await conn.execute(o.update().where(o.c.seq.in_(seqs)).values(sent_at=now))


async def dead_letter(conn: AsyncConnection, rows: Sequence[tuple[dict[str, Any], str]], now: datetime) -> None:
    """Move events from the outbox to the dead letters, each with its reason."""
    if not rows:
        return
    letters = [{c: row[c] for c in _EVENT_COLUMNS} | {"reason": why[:2000], "failed_at": now} for row, why in rows]
    await conn.execute(event_dead_letters.insert(), letters)
    await conn.execute(event_outbox.delete().where(event_outbox.c.seq.in_([row["seq"] for row, _ in rows])))


async def overflow(conn: AsyncConnection, max_rows: int, reason: str, now: datetime, *, limit: int) -> int:
    """Move the unsent events past the `max_rows` oldest (up to `limit` of them) to the dead letters:
    the oldest stay in order for the broker's return; returns how many moved."""
    o = event_outbox
    first_over = await conn.scalar(sa.select(o.c.seq).where(_UNSENT).order_by(o.c.seq).offset(max_rows).limit(1))
    if first_over is None:
        return 0
    query = sa.select(o).where(_UNSENT, o.c.seq >= first_over).order_by(o.c.seq).limit(limit)
    rows = [dict(row) for row in (await conn.execute(query)).mappings()]
    await dead_letter(conn, [(row, reason) for row in rows], now)
    return len(rows)


async def prune_sent(conn: AsyncConnection, before: datetime, *, limit: int) -> int:
    """Delete up to `limit` events sent before `before`, oldest first: a walk of the primary key from its
    start, where the old sent rows are, that stops at the first `limit`."""
    o = event_outbox
    old = sa.select(o.c.seq).where(o.c.sent_at < before).order_by(o.c.seq).limit(limit).scalar_subquery()
    return int((await conn.execute(o.delete().where(o.c.seq.in_(old)))).rowcount or 0)


async def dead_letters_page(
    conn: AsyncConnection, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    d = event_dead_letters
    return await paging.newest_first(
        conn, sa.select(d), d.c.id, limit=limit, cursor=cursor, to_item=dict, id_of=lambda row: str(row["id"])
    )


async def take_dead_letter(conn: AsyncConnection, letter_id: str) -> dict[str, Any] | None:
    """Remove a dead letter and return it (None if absent), for the caller to put back in the outbox."""
    d = event_dead_letters
    row = (await conn.execute(sa.select(d).where(d.c.id == letter_id).with_for_update())).mappings().first()
    if row is None:
        return None
    await conn.execute(d.delete().where(d.c.id == letter_id))
    return dict(row)
