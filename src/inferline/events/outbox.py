"""Writing events into the outbox, in the caller's transaction (never a commit here).

Whether this database takes events at all is an execution option of its engine (`EVENTS_OPTION`, set by
`bootstrap.py` when `events_broker` is set): job stores read it from the connection they are given, so
events cost nothing, not even a call, where no broker is configured, and no use case passes a flag down.

One store write is one outbox row, whatever its number of events (a claim of 64 jobs, a batch of 64
outcomes): `events` counts them, `payload` holds them in order, already encoded (`envelope.py`). Each event
gets its own id (a UUIDv7) here, at write time: it is the event's id for good, through resends, dead
letters and their retries. A job's event carries a summary of the job (`job_data`), built from the job as
read and the values written, not its input, result or checkpoint: consumers GET the job for those. Per
job and per event, this is what keeps events within a few percent of a job's cost (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.events import envelope
from inferline.ids import new_id, new_ids
from inferline.jobs.model import Job, summary
from inferline.schema import event_outbox

EVENTS_OPTION = "inferline_events"

# The job's fields an event's data carries: its public view (`jobs/model.py`) without input, result and
# webhook settings.
_DATA_FIELDS = frozenset(
    {
        "id",
        "kind",
        "tenant",
        "status",
        "stage",
        "progress",
        "detail",
        "attempts",
        "max_attempts",
        "priority",
        "error",
        "cancel_requested",
        "schedule_id",
        "deadline_at",
        "created_at",
        "started_at",
        "finished_at",
        "canceled_at",
        "updated_at",
    }
)
_INSERT = event_outbox.insert()


def enabled(conn: AsyncConnection | sa.Connection) -> bool:
    """Whether the engine behind `conn` writes events (see the module docstring)."""
    return bool(conn.engine.get_execution_options().get(EVENTS_OPTION, False))


def job_data(job: Job, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A job's event data: `job` as read, with `values` (columns just written over it) on top. Datetimes
    stay datetimes: the encoder writes them."""
    data = summary(job)
    if values:
        for key in _DATA_FIELDS.intersection(values):
            data[key] = values[key]
    return data


def job_events(changes: Iterable[tuple[str, Job, Mapping[str, Any] | None]]) -> list[str]:
    """Stored events for `(event type, job as read, values written over it or None)`; the event's time is
    the change's `updated_at`."""
    changes = list(changes)
    lines = []
    for event_id, (type_, job, values) in zip(new_ids(len(changes)), changes, strict=True):
        data = job_data(job, values)
        lines.append(envelope.stored(event_id, type_, job.id, job.tenant, data["updated_at"], data))
    return lines


def _rows(lines: list[str]) -> list[dict[str, Any]]:
    step = envelope.MAX_EVENTS_PER_ROW
    return [
        {"events": len(lines[i : i + step]), "payload": "\n".join(lines[i : i + step])}
        for i in range(0, len(lines), step)
    ]


async def add(conn: AsyncConnection, lines: list[str]) -> None:
    """One outbox row holding these stored events in order (more past `MAX_EVENTS_PER_ROW`)."""
    for row in _rows(lines):
        await conn.execute(_INSERT, row)


def add_sync(conn: sa.Connection, lines: list[str]) -> None:
    """`add` for SQLite's one-hop writer thread (`db.SqliteWriter`)."""
    for row in _rows(lines):
        conn.execute(_INSERT, row)


async def record(
    conn: AsyncConnection, type_: str, *, subject: str, tenant: str, data: dict[str, Any], now: datetime
) -> None:
    """One event of a workload (`batch.completed`, `alert.firing`) in the caller's transaction, when
    events are on; `data` must be JSON values."""
    if enabled(conn):
        await add(conn, [envelope.stored(new_id(), type_, subject, tenant, now, data, any_keys=True)])
