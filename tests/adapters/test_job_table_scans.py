"""Readers of the jobs table that run while the fleet works read the jobs they need through an index, not
every job ever finished (PostgreSQL plans; the table holds 5,000 finished jobs and a few active ones)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.files import store as file_store
from inferline.jobs import retention
from inferline.jobs.model import JobStatus
from inferline.monitor import jobstats
from inferline.monitor.jobstats import queue_depth_query
from inferline.schema import files

# 5,000 finished jobs (all but the last ten an hour ago), 20 running (half started two hours ago), 50
# queued (five of them retries, started before); every tenth names a file of its tenant, as `job_files`
# records.
_JOBS = """
INSERT INTO jobs (id, kind, tenant, status, progress, attempts, max_attempts, priority, fair_seq, input,
    cancel_requested, run_after, created_at, started_at, finished_at, updated_at, lease_owner)
SELECT gen_random_uuid()::text, 'echo', 't' || (g % 5), s, 0, 1, 3, 0, g,
    CASE WHEN g % 10 = 0 THEN jsonb_build_object('file_id', 'f' || g) ELSE '{}'::jsonb END,
    false, now(), now() - interval '3 hours',
    CASE WHEN s = 'queued' AND g % 10 <> 0 THEN NULL
         WHEN s = 'succeeded' AND g <= 4990 THEN now() - interval '61 minutes'
         WHEN s = 'running' AND g % 2 = 0 THEN now() - interval '2 hours'
         ELSE now() - interval '20 seconds' END,
    CASE WHEN s = 'succeeded' THEN now() - CASE WHEN g <= 4990 THEN interval '1 hour' ELSE interval '10 seconds' END
    END,
    now(), CASE WHEN s = 'running' THEN 'w' END
FROM (SELECT g, CASE WHEN g <= 5000 THEN 'succeeded' WHEN g <= 5020 THEN 'running' ELSE 'queued' END AS s
      FROM generate_series(1, 5070) g) numbered
"""
_JOB_FILES = """
INSERT INTO job_files (job_id, file_id, tenant) SELECT id, input->>'file_id', tenant FROM jobs WHERE input ? 'file_id'
"""
_FILES = """
INSERT INTO files (id, tenant, sha256, size, content_type, created_at)
SELECT 'f' || g, 't' || (g % 5), md5(g::text) || md5(g::text), 1, 'text/plain', now()
FROM generate_series(1, 5070, 10) g
"""


async def _plan(engine: AsyncEngine, query: sa.Executable) -> str:
    async with db.read(engine) as conn:
        text = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        return "\n".join((await conn.execute(sa.text("EXPLAIN " + text))).scalars())


@pytest.fixture
async def many_finished_jobs(engine: AsyncEngine) -> AsyncEngine:
    if engine.dialect.name != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    async with db.write(engine) as conn:
        for statement in (_JOBS, _JOB_FILES, _FILES, "ANALYZE jobs", "ANALYZE job_files", "ANALYZE files"):
            await conn.execute(sa.text(statement))
    return engine


async def test_the_queue_depth_reads_only_queued_or_running_jobs(many_finished_jobs: AsyncEngine) -> None:
    plan = await _plan(many_finished_jobs, queue_depth_query())
    assert "Seq Scan on jobs" not in plan and plan.count("Index") >= 2, plan
    async with db.read(many_finished_jobs) as conn:
        depths = {(status, tenant): count for status, tenant, _, count in await conn.execute(queue_depth_query())}
    assert sum(depths.values()) == 70 and depths[(JobStatus.RUNNING.value, "t1")] == 4, depths


async def test_a_files_use_by_jobs_is_found_through_job_files_not_every_active_job(
    many_finished_jobs: AsyncEngine,
) -> None:
    ours = sa.and_(files.c.tenant == "t1", files.c.id.in_(["f11", "f21", "f31"]))
    plan = await _plan(many_finished_jobs, sa.select(files.c.id).where(ours, ~file_store._in_use()))
    assert "Seq Scan on jobs" not in plan and "ix_job_files_tenant_file" in plan, plan


async def _now(engine: AsyncEngine) -> datetime:
    async with db.read(engine) as conn:
        return (await conn.execute(sa.text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]


async def test_the_monitors_windows_read_the_jobs_of_the_window_not_every_job_finished(
    many_finished_jobs: AsyncEngine,
) -> None:
    """The sampler's three windows (ended and started in the last minute, ended in the last five) go
    through `ix_jobs_finished_at` and the active jobs' indexes, and count what reading every row counts."""
    minute_ago = await _now(many_finished_jobs) - timedelta(seconds=60)
    queries = {
        "finished": jobstats.finished_query(minute_ago),
        "started": jobstats.started_query(minute_ago),
        "recent": jobstats.recent_query("postgresql", minute_ago - timedelta(seconds=240)),
    }
    for name, query in queries.items():
        plan = await _plan(many_finished_jobs, query)
        assert "Seq Scan on jobs" not in plan and "ix_jobs_finished_at" in plan, (name, plan)
    async with db.read(many_finished_jobs) as conn:
        finished = sum(row[3] for row in await conn.execute(queries["finished"]))
        started = sum(row[2] for row in await conn.execute(queries["started"]))
        recent = len((await conn.execute(queries["recent"])).all())
        every_row = sa.text(
            "SELECT count(*) FILTER (WHERE finished_at >= :since), count(*) FILTER (WHERE started_at >= :since)"
            " FROM jobs"
        )
        expected = (await conn.execute(every_row, {"since": minute_ago})).one()
    # The last ten finished, and the ten running, the five queued retries and those ten started since.
    assert (finished, started) == tuple(expected) == (10, 25), (finished, started, expected)
    assert recent == 10


@pytest.mark.parametrize("ended_before", [timedelta(minutes=30), timedelta(hours=2)])
async def test_the_retention_reads_the_jobs_ended_before_its_cutoff_not_every_job(
    many_finished_jobs: AsyncEngine, ended_before: timedelta
) -> None:
    """The purge's choice walks `ix_jobs_finished_at` from the oldest (a chunk of a backlog, or nothing
    past a cutoff no job is older than), never the whole table."""
    cutoff = await _now(many_finished_jobs) - ended_before
    query = retention.purgeable_query(cutoff, retention.CHUNK_JOBS)
    for choice in (query, retention.purgeable_query(cutoff, retention.CHUNK_JOBS, since=cutoff - ended_before)):
        plan = await _plan(many_finished_jobs, choice)  # from the oldest, and from where the last round ended
        assert "Seq Scan on jobs" not in plan and "ix_jobs_finished_at" in plan, plan
    async with db.read(many_finished_jobs) as conn:
        chosen = len((await conn.execute(query)).all())
    assert chosen == (retention.CHUNK_JOBS if ended_before < timedelta(hours=1) else 0)
