"""Cron schedules that create a job from a template at each tick.

Exactly one job per tick with any number of workers: a due schedule row is locked while its job is
created and its next tick written (SKIP LOCKED on PostgreSQL, the write lock on SQLite), and the job
carries the idempotency key `inferline:schedule:<id>:<tick>` as a second guard (a key no tenant may send:
`submission.SERVER_KEY_PREFIX`). Each schedule fires in a savepoint of its own: a tick whose job cannot be
inserted (its key taken) moves on without taking back the other schedules of the batch, which are often
other tenants'. Missed ticks (all workers down) fire once, then the schedule moves on to the next future
tick. Each tick that fires runs in a span of its own (`schedule tick`), so the job it creates, whose
attempts continue the trace of whoever submitted it, is traced back to its schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from cronsim import CronSim, CronSimError
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, paging
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound
from inferline.files.store import hold_files
from inferline.ids import new_id
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job
from inferline.jobs.submission import (
    SERVER_KEY_PREFIX,
    JobRequest,
    JobTransaction,
    Submitter,
    check_webhook,
    new_job,
    validated_request,
)
from inferline.outbound import OutboundPolicy
from inferline.schema import schedules

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Schedule:
    id: str
    tenant: str
    name: str | None
    cron: str
    template: dict[str, Any]
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: str | None
    created_at: datetime


def tick_key(schedule_id: str, tick: datetime) -> str:
    """The idempotency key of the job of one tick of a schedule."""
    return f"{SERVER_KEY_PREFIX}schedule:{schedule_id}:{tick.isoformat()}"


def next_tick(cron: str, after: datetime) -> datetime:
    try:
        return next(CronSim(cron, after))
    except (CronSimError, StopIteration) as exc:
        raise InvalidInput(f"cron expression {cron!r}: {exc or 'never fires'}", field="cron") from exc


def _schedule(row: Any) -> Schedule:
    return Schedule(**dict(row))


async def create_schedule(
    engine: AsyncEngine,
    registry: KindRegistry,
    *,
    tenant: str,
    cron: str,
    template: JobRequest,
    name: str | None = None,
    outbound: OutboundPolicy | None = None,
) -> Schedule:
    template = validated_request(registry, template)
    await check_webhook(outbound or OutboundPolicy(), template, tenant=tenant)
    await _check_as_a_tick_would(engine, registry, template, tenant=tenant)
    now = utcnow()
    schedule = Schedule(
        id=new_id(),
        tenant=tenant,
        name=name,
        cron=cron,
        template=template.__dict__,
        next_run_at=next_tick(cron, now),
        last_run_at=None,
        last_job_id=None,
        created_at=now,
    )
    async with db.write(engine) as conn:
        await conn.execute(schedules.insert().values(**schedule.__dict__))
    return schedule


class _Checked(Exception):
    """Ends a schedule's check: its transaction rolls back, whatever the kind's hook wrote."""


async def _check_as_a_tick_would(
    engine: AsyncEngine, registry: KindRegistry, template: JobRequest, *, tenant: str
) -> None:
    """Refuse now what the first tick would be refused for (the tenant's file or collection missing, a
    drop folder the operator did not set up), with the same 4xx: the kind's `on_queue` and the files the
    input names, in a transaction rolled back (a hook may write: the media pipeline claims its project).
    A 409 is not refused: it says what is true now, not what a tick will find."""
    kind = registry.get(template.kind)
    file_ids = kind.file_ids(template.input)
    if kind.on_queue is None and not file_ids:
        return
    job = new_job(template, tenant=tenant, now=utcnow(), default_max_attempts=1)
    # A conflict is a passing state (the project's run in progress): a later tick may find it gone.
    with contextlib.suppress(_Checked, Conflict):
        async with db.write(engine) as conn:
            if kind.on_queue is not None:  # in the order a submission checks them (`_add_holding_files`)
                await kind.on_queue(conn, job)
            await hold_files(conn, tenant, file_ids)
            raise _Checked


async def list_schedules(
    engine: AsyncEngine, *, tenant: str, limit: int = 50, cursor: str | None = None
) -> tuple[list[Schedule], str | None]:
    query = sa.select(schedules).where(schedules.c.tenant == tenant)
    async with db.read(engine) as conn:
        return await paging.newest_first(
            conn, query, schedules.c.id, limit=limit, cursor=cursor, to_item=_schedule, id_of=lambda s: s.id
        )


async def delete_schedule(engine: AsyncEngine, *, tenant: str, schedule_id: str) -> None:
    async with db.write(engine) as conn:
        result = await conn.execute(
            schedules.delete().where(schedules.c.id == schedule_id, schedules.c.tenant == tenant)
        )
    if not result.rowcount:
        raise NotFound(f"schedule {schedule_id} not found")


async def run_schedule(submitter: Submitter, *, tenant: str, schedule_id: str) -> Job:
    """Queue the schedule's job now, as a tick would (its next tick stays as it was): 404 for a missing
    schedule or another tenant's; a template refused now (its file deleted, its kind refusing it) is the
    4xx that `POST /jobs` would answer."""
    now = utcnow()
    async with submitter.transaction() as tx:
        query = sa.select(schedules).where(schedules.c.id == schedule_id, schedules.c.tenant == tenant)
        row = (await tx.conn.execute(query.with_for_update())).mappings().first()
        if row is None:
            raise NotFound(f"schedule {schedule_id} not found")
        schedule = _schedule(row)
        job = await tx.add(JobRequest(**schedule.template), tenant=tenant, schedule_id=schedule.id, now=now)
        await tx.conn.execute(
            schedules.update().where(schedules.c.id == schedule.id).values(last_run_at=now, last_job_id=job.id)
        )
    return job


async def fire_due_schedules(submitter: Submitter, *, limit: int = 100, tracer: Tracer | None = None) -> int:
    """Create the job of every due schedule and move each to its next tick. Returns jobs created. A
    template the kind no longer accepts (its input model changed) creates no job: the tick is logged
    and skipped."""
    now = utcnow()
    created = 0
    tracer = tracer or NoOpTracer()
    async with submitter.transaction() as tx:
        query = (
            sa.select(schedules).where(schedules.c.next_run_at <= now).limit(limit).with_for_update(skip_locked=True)
        )
        due = [_schedule(row) for row in (await tx.conn.execute(query)).mappings()]
        for schedule in due:
            attributes = {
                "inferline.schedule.id": schedule.id,
                "inferline.tenant": schedule.tenant,
                "inferline.schedule.tick": schedule.next_run_at.isoformat(),
            }
            with tracer.start_as_current_span("schedule tick", kind=SpanKind.PRODUCER, attributes=attributes) as span:
                job_id = await _fire(tx, schedule, now)
                span.set_attribute("inferline.job.id", job_id or "")
            created += job_id is not None
            await tx.conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule.id)
                .values(
                    next_run_at=next_tick(schedule.cron, now),
                    last_run_at=now,
                    last_job_id=job_id or schedule.last_job_id,
                )
            )
    return created


async def _fire(tx: JobTransaction, schedule: Schedule, now: datetime) -> str | None:
    """The tick's job id, or None when it makes none (the schedule moves on either way)."""
    try:
        async with tx.conn.begin_nested():
            job = await tx.add(
                JobRequest(**schedule.template),
                tenant=schedule.tenant,
                idempotency_key=tick_key(schedule.id, schedule.next_run_at),
                schedule_id=schedule.id,
                now=now,
            )
    except (InvalidInput, NotFound, Conflict) as exc:  # a file gone, a kind refusing it now (a project running)
        log.warning("schedule_template_refused", schedule_id=schedule.id, tenant=schedule.tenant, error=str(exc))
        return None
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        # The tick's key is taken, or the row is refused: retrying the same insert at every poll would hold
        # the schedule (and, without the savepoint, the whole batch) at this tick for ever.
        log.warning("schedule_tick_not_inserted", schedule_id=schedule.id, tenant=schedule.tenant, error=str(exc))
        return None
    return job.id


async def run_scheduler(
    submitter: Submitter, *, poll_s: float, stop: asyncio.Event, tracer: Tracer | None = None
) -> None:
    """Fire due schedules every `poll_s` until `stop` is set (never cut off inside a transaction)."""
    while not stop.is_set():
        try:
            await fire_due_schedules(submitter, tracer=tracer)
        except Exception:
            log.exception("scheduler_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
