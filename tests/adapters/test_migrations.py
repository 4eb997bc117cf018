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


async def test_the_job_keys_compare_bytes_on_postgresql_after_0020_and_their_rows_stay(pg_url: str) -> None:
    """Migration 0020: the job queue's text keys, and the job ids other tables join `jobs` by, in COLLATE "C"
    (Alembic's comparison above does not look at collations); a database at 0019 keeps its rows, and a join
    by job id still goes by the other table's index (a join between two collations would not)."""
    from importlib import import_module

    collated = import_module("inferline.migrations.versions.0020_job_keys_bytewise").KEYS
    db.upgrade(pg_url, "0019")
    engine = db.create_engine(pg_url)
    try:
        now = utcnow()
        async with db.write(engine) as conn:
            [job] = await JobStore(conn).add(
                [new_job(JobRequest(kind="echo", input={}), tenant="a", now=now, default_max_attempts=1)]
            )
            await conn.execute(
                sa.text("INSERT INTO job_files (job_id, file_id, tenant) VALUES (:j, 'f', 'a')"), {"j": job.id}
            )
        db.upgrade(pg_url)
        query = sa.text(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND collation_name IS NOT NULL"
        )
        async with db.read(engine) as conn:
            found = {(t, c): name for t, c, name in await conn.execute(query)}
            assert {(t, c): found.get((t, c)) for t, cs in collated.items() for c in cs} == {
                (t, c): "C" for t, cs in collated.items() for c in cs
            }
            assert ("jobs", "detail") not in found  # only the keys: the others keep the default
            joined = sa.text(
                "SELECT jobs.kind FROM jobs JOIN job_files ON job_files.job_id = jobs.id WHERE jobs.id = :j"
            )
            assert (await conn.execute(joined, {"j": job.id})).scalar_one() == "echo"
            for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
                await conn.execute(sa.text(f"SET LOCAL {setting} = off"))  # only a lookup by index is left
            lookups = {  # each side found by the other's id, by the inner side's primary key
                "job_files_pkey": "SELECT 1 FROM jobs o JOIN job_files i ON i.job_id = o.id",
                "jobs_pkey": "SELECT 1 FROM job_files o JOIN jobs i ON i.id = o.job_id",
            }
            plans = {
                index: "\n".join(row[0] for row in await conn.execute(sa.text(f"EXPLAIN {join}")))
                for index, join in lookups.items()
            }
        assert all(f"using {index} on " in plan for index, plan in plans.items()), plans
    finally:
        await engine.dispose()
