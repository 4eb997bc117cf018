from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.schedules import create_schedule, fire_due_schedules, list_schedules
from inferline.jobs.service import list_jobs
from inferline.jobs.submission import JobRequest, Submitter
from inferline.metrics import Metrics
from inferline.schema import schedules


async def test_a_due_tick_makes_exactly_one_job_with_several_schedulers(engine: AsyncEngine, database_url: str) -> None:
    registry = KindRegistry()
    register_echo(registry)
    schedule = await create_schedule(
        engine,
        registry,
        tenant="t",
        cron="* * * * *",
        template=JobRequest(kind="echo", input={"message": "tick"}),
    )
    async with engine.begin() as conn:
        await conn.execute(sa.update(schedules).values(next_run_at=utcnow() - timedelta(seconds=1)))
    # Separate engines stand in for separate worker processes.
    engines = [db.create_engine(database_url) for _ in range(4)]
    try:
        submitters = [Submitter(e, registry, default_max_attempts=3) for e in engines]
        created = await asyncio.gather(*(fire_due_schedules(s) for s in submitters))
    finally:
        for other in engines:
            await other.dispose()
    assert sum(created) == 1
    jobs, _ = await list_jobs(engine, tenant="t")
    assert len(jobs) == 1 and jobs[0].schedule_id == schedule.id and jobs[0].input["message"] == "tick"
    [after], _ = await list_schedules(engine, tenant="t")
    assert after.next_run_at > utcnow() and after.last_job_id == jobs[0].id
    assert (
        await fire_due_schedules(Submitter(engine, registry, default_max_attempts=3)) == 0
    )  # nothing due until the next tick


async def test_fired_schedules_count_as_submitted_jobs(engine: AsyncEngine) -> None:
    registry = KindRegistry()
    register_echo(registry)
    await create_schedule(
        engine, registry, tenant="t", cron="* * * * *", template=JobRequest(kind="echo", input={"message": "m"})
    )
    async with engine.begin() as conn:
        await conn.execute(sa.update(schedules).values(next_run_at=utcnow() - timedelta(seconds=1)))
    metrics = Metrics()
    assert await fire_due_schedules(Submitter(engine, registry, default_max_attempts=3, metrics=metrics)) == 1
    assert 'inferline_jobs_submitted_total{kind="echo"} 1.0' in metrics.render().decode()


async def test_a_template_its_kind_no_longer_accepts_creates_no_job_and_the_schedule_moves_on(
    engine: AsyncEngine,
) -> None:
    registry = KindRegistry()
    register_echo(registry)
    schedule = await create_schedule(
        engine, registry, tenant="t", cron="* * * * *", template=JobRequest(kind="echo", input={"message": "m"})
    )
    async with engine.begin() as conn:  # the template as a kind whose input model has changed would see it
        await conn.execute(
            sa.update(schedules).values(
                next_run_at=utcnow() - timedelta(seconds=1),
                template={"kind": "echo", "input": {"message": "m", "unknown": 1}},
            )
        )
    assert await fire_due_schedules(Submitter(engine, registry, default_max_attempts=3)) == 0
    jobs, _ = await list_jobs(engine, tenant="t")
    [after], _ = await list_schedules(engine, tenant="t")
    assert jobs == [] and after.id == schedule.id and after.next_run_at > utcnow() and after.last_job_id is None
