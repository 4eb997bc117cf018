"""The Alembic migrations build exactly the schema the code declares (`inferline.schema`), on every engine:
hand-written migrations drift silently otherwise."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, schema
from inferline.clock import utcnow
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, new_job
from inferline.schema import jobs

pytestmark = pytest.mark.mariadb_too  # the job store's contract tests run there on this schema


async def test_migrations_match_the_declared_schema(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, schema.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_a_lease_is_refused_on_a_job_that_is_not_running(engine: AsyncEngine) -> None:
    """CHECK `ck_jobs_lease_running` (migration 0017; Alembic does not compare CHECK constraints): a write
    that leaves an owner on a queued or ended job fails on every engine; a running job takes one."""
    now = utcnow()
    async with db.write(engine) as conn:
        await JobStore(conn).add(
            [new_job(JobRequest(kind="echo", input={}), tenant="a", now=now, default_max_attempts=1)]
        )
    for status in ("queued", "succeeded"):
        with pytest.raises(sa.exc.DBAPIError, match=r"ck_jobs_lease_running|CHECK constraint"):
            async with db.write(engine) as conn:
                await conn.execute(jobs.update().values(status=status, lease_owner="w"))
    async with db.write(engine) as conn:
        await conn.execute(jobs.update().values(status="running", lease_owner="w"))
    async with db.read(engine) as conn:
        assert (await conn.execute(sa.select(jobs.c.status, jobs.c.lease_owner))).one() == ("running", "w")


@pytest.mark.parametrize(
    ("index", "predicate"),
    [
        ("ix_jobs_finished_at", "finished_at IS NOT NULL"),  # migration 0018
        ("ix_media_projects_active_job_id", "active_job_id IS NOT NULL"),  # migration 0019
    ],
)
async def test_partial_indexes_hold_only_their_rows_where_the_engine_has_partial_indexes(
    engine: AsyncEngine, index: str, predicate: str
) -> None:
    """Partial on PostgreSQL and SQLite, as declared (Alembic does not compare index predicates, so the
    test above would not see one dropped); MariaDB indexes every row."""
    queries = {
        "postgresql": "SELECT indexdef FROM pg_indexes WHERE indexname = :index",
        "sqlite": "SELECT sql FROM sqlite_master WHERE name = :index",
        "mysql": "SELECT count(DISTINCT index_name) FROM information_schema.statistics WHERE index_name = :index"
        " AND table_schema = DATABASE()",
    }
    async with db.read(engine) as conn:
        found = (await conn.execute(sa.text(queries[engine.dialect.name]), {"index": index})).scalar_one()
    if engine.dialect.name == "mysql":
        assert found == 1
    else:
        assert predicate in str(found), found
