from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, NotFound
from inferline.jobs.context import JobContext
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job
from inferline.jobs.schedules import create_schedule, fire_due_schedules, list_schedules, tick_key
from inferline.jobs.service import list_jobs
from inferline.jobs.submission import JobRequest, Submitter
from inferline.metrics import Metrics
from inferline.schema import schedules

pytestmark = pytest.mark.mariadb_too  # schedules are part of the job core MariaDB serves


async def test_a_due_tick_makes_exactly_one_job_with_several_schedulers(engine: AsyncEngine, database_url: str) -> None:
    # Every minute is a tick: near its end the next tick would come due within the test (a CI failure).
    if (second := utcnow().second + utcnow().microsecond / 1e6) >= 55:
        await asyncio.sleep(60.2 - second)
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


async def test_a_tick_whose_job_cannot_be_inserted_moves_on_without_taking_back_the_others(
    engine: AsyncEngine,
) -> None:
    registry = KindRegistry()
    register_echo(registry)
    submitter = Submitter(engine, registry, default_max_attempts=3)
    template = JobRequest(kind="echo", input={"message": "tick"})
    blocked = await create_schedule(engine, registry, tenant="a", cron="* * * * *", template=template)
    other = await create_schedule(engine, registry, tenant="b", cron="* * * * *", template=template)
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    async with engine.begin() as conn:
        await conn.execute(sa.update(schedules).values(next_run_at=due))
    async with submitter.transaction() as tx:  # the job of `blocked`'s due tick, there already
        squatter = await tx.add(template, tenant="a", idempotency_key=tick_key(blocked.id, due))
    assert await fire_due_schedules(submitter) == 1
    [a_after], _ = await list_schedules(engine, tenant="a")
    [b_after], _ = await list_schedules(engine, tenant="b")
    assert a_after.next_run_at > utcnow() and a_after.last_job_id is None
    assert b_after.next_run_at > utcnow() and b_after.last_job_id is not None
    a_jobs, _ = await list_jobs(engine, tenant="a")
    b_jobs, _ = await list_jobs(engine, tenant="b")
    assert [job.id for job in a_jobs] == [squatter.id]
    assert [job.schedule_id for job in b_jobs] == [other.id]


async def test_a_tick_its_kind_refuses_on_queue_creates_no_job_and_the_others_still_fire(engine: AsyncEngine) -> None:
    registry = KindRegistry()
    register_echo(registry)
    refused: list[str] = []

    async def busy(conn: AsyncConnection, job: Job) -> None:  # as a project refuses a second run
        refused.append(job.tenant)
        if job.tenant == "a":
            raise Conflict("project is running")

    async def run(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {}

    registry.kind("guarded", on_queue=busy)(run)
    template = JobRequest(kind="guarded", input={})
    await create_schedule(engine, registry, tenant="a", cron="* * * * *", template=template)
    await create_schedule(engine, registry, tenant="b", cron="* * * * *", template=template)
    refused.clear()  # the checks when they were made (a conflict does not refuse a schedule)
    async with engine.begin() as conn:
        await conn.execute(sa.update(schedules).values(next_run_at=utcnow() - timedelta(seconds=1)))
    assert await fire_due_schedules(Submitter(engine, registry, default_max_attempts=3)) == 1
    assert sorted(refused) == ["a", "b"]
    assert [job.tenant for job in (await list_jobs(engine, tenant="a"))[0]] == []
    assert len((await list_jobs(engine, tenant="b"))[0]) == 1
    for tenant in ("a", "b"):
        [after], _ = await list_schedules(engine, tenant=tenant)
        assert after.next_run_at > utcnow()


async def test_a_schedule_is_refused_when_made_as_its_first_tick_would_be_but_not_for_a_passing_conflict(
    engine: AsyncEngine,
) -> None:
    registry = KindRegistry()
    refusals: dict[str, Exception] = {"busy": Conflict("project is running"), "gone": NotFound("project not found")}
    wrote: list[str] = []

    async def guard(conn: AsyncConnection, job: Job) -> None:
        # What it writes is taken back: a schedule's check queues nothing.
        await conn.execute(sa.update(schedules).values(name="written by a check"))
        wrote.append(job.tenant)
        if job.tenant in refusals:
            raise refusals[job.tenant]

    async def run(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {}

    registry.kind("guarded", on_queue=guard)(run)
    registry.kind("plain")(run)
    guarded = JobRequest(kind="guarded", input={})
    await create_schedule(engine, registry, tenant="free", cron="* * * * *", template=guarded, name="kept")
    await create_schedule(engine, registry, tenant="busy", cron="* * * * *", template=guarded, name="kept")
    with pytest.raises(NotFound):
        await create_schedule(engine, registry, tenant="gone", cron="* * * * *", template=guarded)
    with pytest.raises(NotFound, match="file nope"):  # the files its input names, as a tick holds them
        await create_schedule(
            engine, registry, tenant="free", cron="* * * * *", template=JobRequest("plain", {"file_id": "nope"})
        )
    assert wrote == ["free", "busy", "gone"]
    made = {tenant: (await list_schedules(engine, tenant=tenant))[0] for tenant in ("free", "busy", "gone")}
    assert {tenant: [s.name for s in found] for tenant, found in made.items()} == {
        "free": ["kept"],
        "busy": ["kept"],
        "gone": [],
    }
