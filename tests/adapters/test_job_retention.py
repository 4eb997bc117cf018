"""The retention of ended jobs (`jobs/retention.py`): what is deleted past `jobs_retention_s`, what is kept
because something still reads it, and the elected loop, on every engine."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import db, leases
from inferline.clock import utcnow
from inferline.config import Settings
from inferline.ids import new_id
from inferline.jobs.children import child_key
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.retention import LEASE, Purged, Retention, purge_ended
from inferline.jobs.submission import JobRequest, Submitter
from inferline.metrics import Metrics
from inferline.schema import batches, job_files, jobs, media_projects, webhook_deliveries

pytestmark = pytest.mark.mariadb_too  # the job core's tables: all three engines

HOUR = timedelta(hours=1)


def _submitter(engine: AsyncEngine) -> Submitter:
    registry = KindRegistry()
    register_echo(registry)
    return Submitter(engine, registry, default_max_attempts=1)


async def _job(submitter: Submitter, *, key: str | None = None, server_key: str | None = None) -> str:
    request = JobRequest(kind="echo", input={"message": "m"})
    if server_key is not None:  # a child's key: written as the parent's submission writes it
        async with submitter.transaction() as tx:
            return (await tx.add(request, tenant="a", idempotency_key=server_key)).id
    job, _ = await submitter.submit(request, tenant="a", idempotency_key=key)
    return job.id


async def _set(engine: AsyncEngine, job_id: str, status: str, finished_at: datetime | None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": finished_at}
    if status != "queued":
        values["started_at"] = (finished_at or utcnow()) - timedelta(seconds=1)
    async with db.write(engine) as conn:
        await conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))


async def _ids(engine: AsyncEngine, table: sa.Table, column: str = "id") -> set[str]:
    async with db.read(engine) as conn:
        return set((await conn.execute(sa.select(table.c[column]))).scalars())


async def _delivery(engine: AsyncEngine, job_id: str, status: str) -> str:
    now = utcnow()
    row = {
        "id": new_id(),
        "job_id": job_id,
        "tenant": "a",
        "url": "https://example.com/hook",
        "event": "completed",
        "payload": {},
        "status": status,
        "attempts": 1,
        "next_attempt_at": now,
        "created_at": now,
    }
    async with db.write(engine) as conn:
        await conn.execute(webhook_deliveries.insert().values(**row))
    return str(row["id"])


async def test_jobs_ended_past_retention_go_with_their_file_rows_and_deliveries_the_rest_stays(
    engine: AsyncEngine,
) -> None:
    submitter = _submitter(engine)
    now = utcnow()
    old = {status: await _job(submitter) for status in ("succeeded", "failed", "canceled")}
    for status, job_id in old.items():
        await _set(engine, job_id, status, now - 2 * HOUR)
    recent, queued, running = await _job(submitter), await _job(submitter), await _job(submitter)
    await _set(engine, recent, "succeeded", now - 10 * timedelta(minutes=1))
    await _set(engine, running, "running", None)
    async with db.write(engine) as conn:  # a running job started long ago: only `finished_at` counts
        await conn.execute(jobs.update().where(jobs.c.id == running).values(started_at=now - 5 * HOUR))
        await conn.execute(job_files.insert().values(job_id=old["succeeded"], file_id=new_id(), tenant="a"))
        await conn.execute(job_files.insert().values(job_id=queued, file_id=new_id(), tenant="a"))
    delivered = await _delivery(engine, old["failed"], "delivered")
    kept_delivery = await _delivery(engine, recent, "delivered")

    async with db.write(engine) as conn:
        assert (await purge_ended(conn, now - HOUR)).jobs == 3

    assert await _ids(engine, jobs) == {recent, queued, running}
    assert await _ids(engine, job_files, "job_id") == {queued}
    assert delivered not in await _ids(engine, webhook_deliveries)
    assert kept_delivery in await _ids(engine, webhook_deliveries)
    async with db.write(engine) as conn:
        assert (await purge_ended(conn, now - HOUR)).jobs == 0


async def test_jobs_something_still_reads_are_kept_until_it_no_longer_does(engine: AsyncEngine) -> None:
    """A pending webhook delivery, a parent that has not ended, a batch and a media project keep their
    job past retention; once the delivery is sent and the parent has ended, the jobs go."""
    submitter = _submitter(engine)
    now = utcnow()
    long_ago = now - 3 * HOUR
    notified, by_batch, by_project = await _job(submitter), await _job(submitter), await _job(submitter)
    parent = await _job(submitter)
    child = await _job(submitter, server_key=child_key(parent, "canvas:0"))
    await _set(engine, parent, "running", None)
    for job_id in (notified, by_batch, by_project, child):
        await _set(engine, job_id, "succeeded", long_ago)
    pending = await _delivery(engine, notified, "pending")
    async with db.write(engine) as conn:
        await conn.execute(
            batches.insert().values(
                id=new_id(), tenant="a", collection="c", input_file_id=new_id(), id_field="id", chunk_records=10,
                status="completed", completed=0, failed=0, job_id=by_batch, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        await conn.execute(
            media_projects.insert().values(
                id=new_id(), tenant="a", name="p", settings={}, status="submitted", active_job_id=by_project,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip

    async with db.write(engine) as conn:
        assert (await purge_ended(conn, now - HOUR)).jobs == 0
    assert await _ids(engine, jobs) == {notified, by_batch, by_project, parent, child}

    async with db.write(engine) as conn:
        await conn.execute(
            webhook_deliveries.update().where(webhook_deliveries.c.id == pending).values(status="delivered")
        )
    await _set(engine, parent, "succeeded", now - 2 * HOUR)
    async with db.write(engine) as conn:
        assert (await purge_ended(conn, now - HOUR)).jobs == 3
    assert await _ids(engine, jobs) == {by_batch, by_project}
    assert await _ids(engine, webhook_deliveries) == set()


async def test_the_oldest_go_first_a_chunk_at_a_time(engine: AsyncEngine) -> None:
    submitter = _submitter(engine)
    now = utcnow()
    made = [await _job(submitter) for _ in range(5)]
    for age, job_id in enumerate(made):  # the first made ended last
        await _set(engine, job_id, "succeeded", now - HOUR - timedelta(minutes=10 * age))
    async with db.write(engine) as conn:
        assert (await purge_ended(conn, now - HOUR / 2, limit=2)).jobs == 2
    assert await _ids(engine, jobs) == set(made[:3])


async def test_rounds_go_on_past_the_kept_jobs_and_look_at_them_again_every_rescan(engine: AsyncEngine) -> None:
    """A kept job (its webhook delivery pending) at the oldest end is not read again round after round;
    once its delivery is sent, the next rescan deletes it."""
    submitter = _submitter(engine)
    now = utcnow()
    kept, old = await _job(submitter), await _job(submitter)
    await _set(engine, kept, "succeeded", now - 5 * HOUR)
    await _set(engine, old, "succeeded", now - 4 * HOUR)
    pending = await _delivery(engine, kept, "pending")
    retention = Retention(engine, Metrics(), retention_s=3600, rescan_s=3600)
    lease = leases.Lease(LEASE, "test")
    assert await leases.acquire(engine, LEASE, lease.owner, ttl_s=60)
    assert await retention.step(lease) == 1  # `old`; the round goes on from its end time
    async with db.write(engine) as conn:
        await conn.execute(
            webhook_deliveries.update().where(webhook_deliveries.c.id == pending).values(status="delivered")
        )
    later = await _job(submitter)
    await _set(engine, later, "succeeded", now - 2 * HOUR)
    assert await retention.step(lease) == 1  # `later` only: `kept` lies before where the rounds go on
    assert await _ids(engine, jobs) == {kept}
    retention.rescan_s = 0.0
    assert await retention.step(lease) == 1  # the rescan looks from the oldest end again
    assert await _ids(engine, jobs) == set()


async def test_a_child_whose_parent_is_locked_by_its_worker_is_still_kept(engine: AsyncEngine) -> None:
    """The parent's row read in the purge's test is not a locking read: a parent locked by another
    transaction (its worker writing its progress) keeps its ended child, never skipped as if absent."""
    if engine.dialect.name == "sqlite":
        pytest.skip("one writer at a time: no row locks")
    submitter = _submitter(engine)
    parent = await _job(submitter)
    child = await _job(submitter, server_key=child_key(parent, "canvas:0"))
    await _set(engine, parent, "running", None)
    await _set(engine, child, "succeeded", utcnow() - 3 * HOUR)
    async with engine.connect() as holder, holder.begin():
        await holder.execute(sa.select(jobs.c.id).where(jobs.c.id == parent).with_for_update())
        async with asyncio.timeout(10), db.write(engine) as conn:
            assert await purge_ended(conn, utcnow() - HOUR) == Purged({}, None)
    assert await _ids(engine, jobs) == {parent, child}


async def test_the_loop_deletes_past_retention_and_frees_the_idempotency_key(engine: AsyncEngine) -> None:
    submitter = _submitter(engine)
    now = utcnow()
    first = await _job(submitter, key="order-17")
    assert await _job(submitter, key="order-17") == first  # the key finds its job while it is kept
    await _set(engine, first, "succeeded", now - 3 * HOUR)
    recent = await _job(submitter)
    await _set(engine, recent, "succeeded", now - HOUR / 2)
    metrics = Metrics()
    retention = Retention(engine, metrics, retention_s=2 * 3600, every_s=0.05)
    stop = asyncio.Event()
    loop = asyncio.create_task(retention.run(stop, owner="test"))
    try:
        await eventually(lambda: _ids(engine, jobs), lambda ids: first not in ids)
    finally:
        stop.set()
        await loop
    assert await _ids(engine, jobs) == {recent}
    assert metrics.jobs_purged.labels("echo")._value.get() == 1
    again = await _job(submitter, key="order-17")
    assert again != first  # a new job: the key was freed with the job


@pytest.mark.parametrize(("retention_s", "valid"), [(0, True), (3600, True), (86_400 * 30, True), (60, False)])
def test_a_retention_is_none_or_at_least_an_hour(retention_s: float, valid: bool) -> None:
    if valid:
        assert Settings(jobs_retention_s=retention_s).jobs_retention_s == retention_s
    else:
        with pytest.raises(ValidationError, match="jobs_retention_s"):
            Settings(jobs_retention_s=retention_s)
