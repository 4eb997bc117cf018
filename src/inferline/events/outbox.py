"""Writing events into the outbox, in the caller's transaction (never a commit here).

Whether this database takes events at all is an execution option of its engine (`EVENTS_OPTION`, set by
`bootstrap.py` when `events_broker` is set): job stores read it from the connection they are given, so
events cost nothing, not even a call, where no broker is configured, and no use case passes a flag down.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.ids import new_id
from inferline.jobs.model import Job, public_view
from inferline.schema import event_outbox

EVENTS_OPTION = "inferline_events"


def enabled(conn: AsyncConnection | sa.Connection) -> bool:
    """Whether the engine behind `conn` writes events (see the module docstring)."""
    return bool(conn.engine.get_execution_options().get(EVENTS_OPTION, False))


def event_row(type_: str, subject: str, tenant: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An outbox row; its `id` (a UUIDv7) is the event's id for good, through retries and dead letters."""
    return {"id": new_id(), "type": type_, "subject": subject, "tenant": tenant, "time": now, "data": data}


def job_rows(changes: Iterable[tuple[str, Job]]) -> list[dict[str, Any]]:
    """Rows for `(event type, job as changed)` pairs: the job's public view as the data, the change's
    `updated_at` as the time."""
    return [event_row(type_, job.id, job.tenant, public_view(job), job.updated_at) for type_, job in changes]


async def add(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert the rows in one statement (an executemany for several)."""
    if rows:
        await conn.execute(event_outbox.insert(), rows)


def add_sync(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """`add` for SQLite's one-hop writer thread (`db.SqliteWriter`)."""
    if rows:
        conn.execute(event_outbox.insert(), rows)


async def record(
    conn: AsyncConnection, type_: str, *, subject: str, tenant: str, data: dict[str, Any], now: datetime
) -> None:
    """One event of a workload (`batch.completed`, `alert.firing`) in the caller's transaction, when
    events are on."""
    if enabled(conn):
        await add(conn, [event_row(type_, subject, tenant, data, now)])
