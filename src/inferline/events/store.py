"""SQL of the outbox and its dead letters, for the publisher and the admin routes; never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import paging
from inferline.events import envelope
from inferline.schema import UTCDateTime, event_dead_letters, event_outbox

_UNSENT = event_outbox.c.sent_at.is_(None)


async def unsent(conn: AsyncConnection, max_events: int) -> tuple[list[tuple[int, str]], bool]:
    """The oldest unsent rows, in outbox order, as (seq, payload): whole rows, as many as hold at most
    `max_events` events together, and at least one; and whether more unsent rows may wait after them."""
    o = event_outbox
    query = sa.select(o.c.seq, o.c.events).where(_UNSENT).order_by(o.c.seq).limit(max_events)
    heads = (await conn.execute(query)).all()
    chosen: list[int] = []
    total = 0
    for seq, count in heads:
        if chosen and total + count > max_events:
            break
        chosen.append(seq)
        total += count
    if not chosen:
        return [], False
    rows = await conn.execute(sa.select(o.c.seq, o.c.payload).where(o.c.seq.in_(chosen)).order_by(o.c.seq))
    return [(seq, payload) for seq, payload in rows], len(chosen) < len(heads) or len(heads) == max_events


async def unsent_count(conn: AsyncConnection) -> int:
    """Unsent events (not rows)."""
    o = event_outbox
    return int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(o.c.events), 0)).where(_UNSENT)) or 0)


async def mark_sent(conn: AsyncConnection, seqs: Sequence[int], now: datetime) -> None:
    if seqs:
        o = event_outbox
        await conn.execute(o.update().where(o.c.seq.in_(seqs)).values(sent_at=now))


async def dead_letter(conn: AsyncConnection, events: Sequence[tuple[str, str]], now: datetime) -> None:
    """Add stored events (`envelope.stored`) to the dead letters, each with its reason; the caller marks
    their rows sent or deletes them."""
    if events:
        letters = [envelope.parse(line) | {"reason": why[:2000], "failed_at": now} for line, why in events]
        await conn.execute(event_dead_letters.insert(), letters)


async def overflow(conn: AsyncConnection, max_events: int, reason: str, now: datetime, *, limit: int) -> int:
    """Past `max_events` unsent events, move the newest rows' events to the dead letters until the outbox
    is back within it (at most about `limit` events a call): the oldest stay in order for the broker's
    return. Whole rows move, so the outbox may end a row's worth under the bound. Returns how many moved."""
    o = event_outbox
    excess = min(await unsent_count(conn) - max_events, limit)
    if excess <= 0:
        return 0
    newest = await conn.execute(sa.select(o.c.seq, o.c.events).where(_UNSENT).order_by(o.c.seq.desc()).limit(limit))
    chosen: list[int] = []
    moved = 0
    for seq, count in newest:
        chosen.append(seq)
        moved += count
        if moved >= excess:
            break
    rows = await conn.execute(sa.select(o.c.payload).where(o.c.seq.in_(chosen)))
    await dead_letter(conn, [(line, reason) for (payload,) in rows for line in envelope.lines(payload)], now)
    await conn.execute(o.delete().where(o.c.seq.in_(chosen)))
    return moved


async def prune_sent(conn: AsyncConnection, before: datetime, *, limit: int) -> int:
    """Delete up to `limit` rows sent before `before`, oldest first: a walk of the primary key from its
    start, where the old sent rows are, that stops at the first `limit`."""
    o = event_outbox
    if conn.dialect.name == "mysql":  # MariaDB refuses LIMIT in an IN subquery; its DELETE takes both itself
        return int((await conn.execute(_PRUNE_SENT_MYSQL, {"before": before, "limit": limit})).rowcount or 0)
    old = sa.select(o.c.seq).where(o.c.sent_at < before).order_by(o.c.seq).limit(limit).scalar_subquery()
    return int((await conn.execute(o.delete().where(o.c.seq.in_(old)))).rowcount or 0)


_PRUNE_SENT_MYSQL = sa.text("DELETE FROM event_outbox WHERE sent_at < :before ORDER BY seq LIMIT :limit").bindparams(
    sa.bindparam("before", type_=UTCDateTime()), sa.bindparam("limit", type_=sa.Integer())
)


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


async def take_dead_letters(
    conn: AsyncConnection, *, type_: str | None, failed_before: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Remove up to `limit` dead letters, oldest failure first (optionally of one type, or failed before a
    time) and return them, for the caller to put back in the outbox. Letters another retry holds are
    skipped, not waited for (SKIP LOCKED where the engine has it)."""
    d = event_dead_letters
    query = sa.select(d).order_by(d.c.failed_at, d.c.id).limit(limit).with_for_update(skip_locked=True)
    if type_ is not None:
        query = query.where(d.c.type == type_)
    if failed_before is not None:
        query = query.where(d.c.failed_at < failed_before)
    rows = [dict(row) for row in (await conn.execute(query)).mappings()]
    if rows:
        await conn.execute(d.delete().where(d.c.id.in_([row["id"] for row in rows])))
    return rows
