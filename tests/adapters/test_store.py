"""The store's contract, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import db
from inferline.clock import utcnow
from inferline.db import SqliteWriter
from inferline.errors import InvalidInput
from inferline.jobs import lanes, service, statements, store
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import JobStatus, RetryPolicy
from inferline.jobs.outcomes import Outcome, reap_jobs, record_outcomes
from inferline.jobs.service import ClaimStart, claim_jobs, ensure_claim_statistics, get_job, list_jobs
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter, new_job
from inferline.metrics import Metrics
from inferline.schema import jobs, webhook_deliveries

pytestmark = pytest.mark.mariadb_too

ECHO = {"message": "x", "steps": 0}


@pytest.fixture
def registry() -> KindRegistry:
    registry = KindRegistry()
    register_echo(registry)
    registry.kind("other")(lambda ctx, data: None)  # type: ignore[arg-type, return-value]
    return registry


async def submit(engine: AsyncEngine, registry: KindRegistry, tenant: str = "a", **fields: object) -> str:
    request = JobRequest(**({"kind": "echo", "input": ECHO} | fields))  # type: ignore[arg-type]
    job, _ = await Submitter(engine, registry, default_max_attempts=3).submit(request, tenant=tenant)
    return job.id


async def claim(engine: AsyncEngine, owner: str = "w1", limit: int = 10, **kw: object) -> list[str]:
    jobs = await claim_jobs(
        engine,
        owner=owner,
        kinds=kw.pop("kinds", ["echo", "other"]),
        limit=limit,  # type: ignore[arg-type]
        lease_s=kw.pop("lease_s", 30.0),
        kind_limits=kw.pop("kind_limits", {}),  # type: ignore[arg-type]
        start=kw.pop("start", None),  # type: ignore[arg-type]
    )
    return [job.id for job in jobs]


async def test_claims_take_higher_priority_first(engine: AsyncEngine, registry: KindRegistry) -> None:
    low = await submit(engine, registry, priority=5)
    high = await submit(engine, registry, priority=1)
    normal = await submit(engine, registry)
    assert await claim(engine) == [high, normal, low]


async def test_claimed_jobs_are_running_with_a_lease_and_one_attempt(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    job_id = await submit(engine, registry)
    await claim(engine, owner="w1")
    job = await get_job(engine, tenant="a", job_id=job_id)
    assert job.status is JobStatus.RUNNING
    assert job.attempts == 1 and job.lease_owner == "w1"
    assert job.lease_expires_at is not None and job.lease_expires_at > utcnow()
    assert job.started_at is not None


async def test_a_claimed_job_is_not_claimed_again(engine: AsyncEngine, registry: KindRegistry) -> None:
    ids = {await submit(engine, registry) for _ in range(5)}
    first = await claim(engine, owner="w1", limit=3)
    second = await claim(engine, owner="w2", limit=10)
    assert len(first) == 3 and len(second) == 2
    assert set(first) | set(second) == ids


async def test_concurrent_claimers_never_share_a_job(engine: AsyncEngine, registry: KindRegistry) -> None:
    ids = {await submit(engine, registry) for _ in range(60)}
    results = await asyncio.gather(*(claim(engine, owner=f"w{i}", limit=7) for i in range(12)))
    claimed = [job_id for batch in results for job_id in batch]
    assert len(claimed) == len(set(claimed)) == 60
    assert set(claimed) == ids


async def test_tenants_alternate_inside_a_priority(engine: AsyncEngine, registry: KindRegistry) -> None:
    a_jobs = [await submit(engine, registry, tenant="a") for _ in range(50)]
    b_job = await submit(engine, registry, tenant="b")
    order = await claim(engine, limit=3)
    # B arrived behind A's 50 jobs, yet runs second: round-robin, not first-come-first-served.
    assert order == [a_jobs[0], b_job, a_jobs[1]]


async def test_a_tenant_returning_to_an_empty_queue_does_not_jump_ahead_of_others(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    for _ in range(3):
        await submit(engine, registry, tenant="a")
    await claim(engine, limit=10)  # queue drained; A's lane is at seq 3
    b_jobs = [await submit(engine, registry, tenant="b") for _ in range(5)]
    a_job = await submit(engine, registry, tenant="a")
    order = await claim(engine, limit=3)
    # A neither jumps ahead of B's first job (it was served last) nor waits behind all of B's.
    assert order[0] == b_jobs[0]
    assert a_job in order


async def test_jobs_waiting_for_backoff_are_not_claimed_early(engine: AsyncEngine, registry: KindRegistry) -> None:
    job_id = await submit(engine, registry)
    async with engine.begin() as conn:
        await conn.execute(jobs.update().values(run_after=utcnow() + timedelta(hours=1)))
    assert await claim(engine) == []
    assert (await get_job(engine, tenant="a", job_id=job_id)).status is JobStatus.QUEUED


async def test_workers_claim_only_their_kinds(engine: AsyncEngine, registry: KindRegistry) -> None:
    echo_id = await submit(engine, registry)
    other_id = await submit(engine, registry, kind="other", input={})
    assert await claim(engine, kinds=["other"]) == [other_id]
    assert await claim(engine, kinds=["echo"]) == [echo_id]


async def test_kind_concurrency_limit_holds_across_claims(engine: AsyncEngine, registry: KindRegistry) -> None:
    for _ in range(5):
        await submit(engine, registry, kind="other", input={})
    echo_id = await submit(engine, registry)
    first = await claim(engine, owner="w1", kind_limits={"other": 2})
    second = await claim(engine, owner="w2", kind_limits={"other": 2})
    assert len(first) == 3 and echo_id in first  # two `other` plus the unlimited echo
    assert second == []


async def test_a_claim_of_a_rare_kind_locks_only_the_jobs_it_takes(engine: AsyncEngine, registry: KindRegistry) -> None:
    """Two workers claim the same kind at once and each gets its share: the first claim's locking read
    walks the queue in order and stops at its limit. MariaDB's optimizer picked the `(status, kind)` index
    for a kind with few queued jobs, then sorted them: every queued job of that kind was locked until the
    claim committed, and the second worker found none."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: two claims never overlap")
    submitter = Submitter(engine, registry, default_max_attempts=3)
    requests = [JobRequest(kind="echo", input=ECHO) for _ in range(2000)]
    requests += [JobRequest(kind="other", input={}) for _ in range(20)]
    await asyncio.gather(*(submitter.submit(request, tenant="a") for request in requests))
    if engine.dialect.name == "mysql":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE TABLE jobs")  # the statistics a server has after a while
    now = utcnow()
    async with engine.connect() as first_conn, first_conn.begin():
        first = await JobStore(first_conn).claim(
            owner="w1", kinds=["other"], limit=5, now=now, lease_s=30, kind_limits={}
        )
        async with asyncio.timeout(10):
            second = await claim(engine, owner="w2", kinds=["other"], limit=50)
    assert len(first) == 5 and len(second) == 15
    assert not {job.id for job in first} & set(second)


async def test_an_idle_claim_on_mariadb_reads_an_index_entry_not_the_queue_of_other_kinds(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """Idle workers there poll with a claim every 0.1 s: one that finds nothing must not walk the queued
    jobs of other kinds (the claim's index is pinned, see jobs/mysql.py)."""
    if engine.dialect.name != "mysql":
        pytest.skip("MariaDB's index hint and its status counters")
    submitter = Submitter(engine, registry, default_max_attempts=3)
    await asyncio.gather(*(submitter.submit(JobRequest(kind="echo", input=ECHO), tenant="a") for _ in range(500)))
    async with engine.connect() as conn, conn.begin():

        async def index_reads() -> int:
            rows = await conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Handler_read_next'")
            return int(rows.one()[1])

        before = await index_reads()
        store = JobStore(conn)
        claimed = await store.claim(owner="w1", kinds=["other"], limit=64, now=utcnow(), lease_s=30, kind_limits={})
        limited = await store.claim(
            owner="w1", kinds=["other"], limit=64, now=utcnow(), lease_s=30, kind_limits={"other": 2}
        )
        assert claimed == limited == [] and await index_reads() - before < 20


async def test_claims_of_limited_kinds_wait_for_each_other_not_for_a_migration(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """A claim of a limited kind counts the running jobs and claims under a lock that lasts until its
    transaction ends: a second claim waits and then sees the slots taken. On MariaDB that lock was the
    row of `alembic_version`, which a migration holds while it runs; it is a row of its own now."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: two claims never overlap")
    for _ in range(3):
        await submit(engine, registry, kind="other", input={})
    limits = {"other": 2}
    async with engine.connect() as migration, migration.begin():  # as a migration's version update holds it
        await migration.exec_driver_sql("SELECT version_num FROM alembic_version FOR UPDATE")
        async with engine.connect() as first_conn, first_conn.begin():
            async with asyncio.timeout(10):
                first = await JobStore(first_conn).claim(
                    owner="w1", kinds=["other"], limit=10, now=utcnow(), lease_s=30, kind_limits=limits
                )
            second = asyncio.create_task(claim(engine, owner="w2", kind_limits=limits))
            await asyncio.sleep(0.5)
            assert not second.done()  # waits for the first claim's transaction
        async with asyncio.timeout(10):
            assert len(first) == 2 and await second == []


async def test_expired_lease_is_claimed_by_another_worker(engine: AsyncEngine, registry: KindRegistry) -> None:
    job_id = await submit(engine, registry)
    assert await claim(engine, owner="dead", lease_s=30) == [job_id]
    after_lease = utcnow() + timedelta(seconds=31)
    assert await reap_jobs(engine, policy=RetryPolicy(), metrics=Metrics(), now=after_lease) == 1
    async with db.write(engine) as conn:  # the reaped job is due again as of `after_lease`
        claimed = await JobStore(conn).claim(
            owner="alive", kinds=["echo"], limit=10, now=after_lease, lease_s=30, kind_limits={}
        )
    assert [job.id for job in claimed] == [job_id]
    job = await get_job(engine, tenant="a", job_id=job_id)
    assert job.lease_owner == "alive" and job.attempts == 2
    assert job.error is not None and job.error["attempts"][0]["type"] == "LeaseExpired"


async def test_expired_lease_on_the_last_attempt_fails_the_job(engine: AsyncEngine, registry: KindRegistry) -> None:
    job_id = await submit(engine, registry, max_attempts=1)
    await claim(engine, owner="dead", lease_s=30)
    await reap_jobs(engine, policy=RetryPolicy(), metrics=Metrics(), now=utcnow() + timedelta(seconds=31))
    job = await get_job(engine, tenant="a", job_id=job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "LeaseExpired"


async def test_renewing_leases_reports_cancel_requests_and_skips_lost_jobs(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    kept, lost = await submit(engine, registry), await submit(engine, registry)
    await claim(engine, owner="w1")
    async with engine.begin() as conn:
        store = JobStore(conn)
        job = await store.get(kept)
        assert job is not None
        await store.save(job.cancel(utcnow()), expect_status=JobStatus.RUNNING)
        await store.update_running(lost, "w1", {"lease_owner": "w2"})
        states = await store.renew_leases(owner="w1", job_ids=[kept, lost], now=utcnow(), lease_s=30)
    assert [(s.job_id, s.cancel_requested) for s in states] == [(kept, True)]


async def test_a_batch_of_outcomes_takes_a_few_statements_not_one_per_job_and_skips_lost_leases(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """A worker's batch (64 jobs: results that differ per job, retries, a lease lost to another worker)
    is written by a handful of statements on the servers: MariaDB's driver sends an executemany of
    UPDATEs as one round trip per row."""
    submitter = Submitter(engine, registry, default_max_attempts=3)
    requests = [JobRequest(kind="echo", input=ECHO) for _ in range(64)]
    await asyncio.gather(*(submitter.submit(request, tenant="a") for request in requests))
    claimed = await claim_jobs(engine, owner="w1", kinds=["echo"], limit=64, lease_s=30, kind_limits={})
    assert len(claimed) == 64
    lost = claimed[5]
    async with db.write(engine) as conn:
        await JobStore(conn).update_running(lost.id, "w1", {"lease_owner": "w2"})
    results: list[object] = [{"n": n, "text": 'it\'s "quoted" \\ 한국어'} for n in range(60)] + [None, [], 3.5, "s"]
    items = [
        (job, Outcome("failed", message=f"boom {n}") if n % 10 == 9 else Outcome("succeeded", result=results[n]))
        for n, job in enumerate(claimed)
    ]
    executed: list[int] = []

    def count(_conn: object, _cursor: object, _statement: str, params: object, _context: object, many: bool) -> None:
        executed.append(len(params) if many else 1)  # type: ignore[arg-type]

    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await record_outcomes(engine, owner="w1", items=items, policy=RetryPolicy(base_s=60), metrics=Metrics())
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
    if engine.dialect.name != "sqlite":  # SQLite's executemany stays in the process
        assert sum(executed) <= 6, executed
    async with engine.connect() as conn:
        rows = {row.id: row for row in await conn.execute(sa.select(jobs))}
    for n, job in enumerate(claimed):
        row = rows[job.id]
        if job.id == lost.id:
            assert (row.status, row.lease_owner, row.result) == ("running", "w2", None)
        elif n % 10 == 9:
            assert (row.status, row.lease_owner, row.attempts) == ("queued", None, 1)
            assert row.error["attempts"][0]["message"] == f"boom {n}" and row.detail == "attempt 1 failed; retrying"
        else:
            assert (row.status, row.lease_owner, row.progress) == ("succeeded", None, 100.0)
            assert row.result == results[n] and row.finished_at is not None


async def test_a_batch_of_outcomes_larger_than_a_statement_may_be_is_written_whole(
    engine: AsyncEngine, registry: KindRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 MB of results in one batch: more than MariaDB takes in one packet (`max_allowed_packet`, 16 MiB
    by default), so its batch finish splits them over several statements; PostgreSQL's does past its own
    bound (1 GiB a message: lowered here to 4 MB, so the test need not send a GiB)."""
    monkeypatch.setattr(store, "PG_STATEMENT_JSON_BYTES", 4_000_000)
    submitter = Submitter(engine, registry, default_max_attempts=3)
    await asyncio.gather(*(submitter.submit(JobRequest(kind="echo", input=ECHO), tenant="a") for _ in range(16)))
    claimed = await claim_jobs(engine, owner="w1", kinds=["echo"], limit=16, lease_s=30, kind_limits={})
    results = {job.id: {"blob": chr(0x41 + n) * 1_500_000} for n, job in enumerate(claimed)}
    items = [(job, Outcome("succeeded", result=results[job.id])) for job in claimed]
    updates: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "WITH")):
            updates.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await record_outcomes(engine, owner="w1", items=items, policy=RetryPolicy(), metrics=Metrics())
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.result)))
    assert len(rows) == 16 and all(row.status == "succeeded" and row.result == results[row.id] for row in rows)
    if engine.dialect.name == "postgresql":
        assert len(updates) == 8  # two 1.5 MB results a statement


@pytest.mark.postgres
async def test_renewal_never_waits_for_a_row_being_written_and_still_reports_it_held(
    pg_url: str, registry: KindRegistry
) -> None:
    db.upgrade(pg_url)
    engine = db.create_engine(pg_url)
    try:
        busy, free = await submit(engine, registry), await submit(engine, registry)
        await claim(engine, owner="w1", lease_s=30)
        renewed_at = utcnow()
        async with engine.begin() as writer:  # the outcome or progress of `busy`, being written
            await JobStore(writer).update_running(busy, "w1", {"detail": "writing"})
            async with asyncio.timeout(5), db.write(engine) as conn:
                states = await JobStore(conn).renew_leases(
                    owner="w1", job_ids=[busy, free], now=renewed_at, lease_s=300
                )
        assert {s.job_id for s in states} == {busy, free}
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(jobs.c.id, jobs.c.lease_expires_at))
            leases = {row.id: row.lease_expires_at for row in rows}
        assert leases[free] > renewed_at + timedelta(seconds=200) > leases[busy]  # `busy` at the next beat
    finally:
        await engine.dispose()


async def test_listing_pages_never_repeat_or_skip(engine: AsyncEngine, registry: KindRegistry) -> None:
    ids = [await submit(engine, registry) for _ in range(23)]
    await submit(engine, registry, tenant="other-tenant")
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await list_jobs(engine, tenant="a", limit=5, cursor=cursor)
        seen += [job.id for job in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_listing_filters_by_status_and_kind(engine: AsyncEngine, registry: KindRegistry) -> None:
    echo_id = await submit(engine, registry)
    other_id = await submit(engine, registry, kind="other", input={})
    await claim(engine, kinds=["other"])
    running, _ = await list_jobs(engine, tenant="a", status=JobStatus.RUNNING)
    echoes, _ = await list_jobs(engine, tenant="a", kind="echo")
    assert [j.id for j in running] == [other_id]
    assert [j.id for j in echoes] == [echo_id]


async def test_group_committed_submissions_get_distinct_seqs_and_tenants_still_alternate(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    writer = SqliteWriter(engine) if engine.dialect.name == "sqlite" else None
    submitter = Submitter(engine, registry, default_max_attempts=3, sqlite_writer=writer)
    try:
        a_jobs = await asyncio.gather(
            *(submitter.submit(JobRequest(kind="echo", input=ECHO), tenant="a") for _ in range(40))
        )
        [(b_job, created)] = [await submitter.submit(JobRequest(kind="echo", input=ECHO), tenant="b")]
    finally:
        if writer is not None:
            writer.close()
    assert created and all(created for _, created in a_jobs)
    seqs = [job.fair_seq for job, _ in a_jobs]
    assert len(set(seqs)) == 40 and max(seqs) - min(seqs) == 39
    order = await claim(engine, limit=3)
    assert order[1] == b_job.id  # B arrived behind A's 40 and still runs second
    stored = await get_job(engine, tenant="a", job_id=a_jobs[0][0].id)
    assert stored.fair_seq == a_jobs[0][0].fair_seq


async def test_a_transaction_that_fails_keeps_neither_its_rows_nor_its_jobs(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    metrics = Metrics()
    submitter = Submitter(engine, registry, default_max_attempts=3, metrics=metrics)
    with pytest.raises(RuntimeError):
        async with submitter.transaction() as tx:
            job = await tx.add(JobRequest(kind="echo", input=ECHO), tenant="a")
            raise RuntimeError("the workload's own write failed")
    assert await stored_job(engine, job.id) is None
    async with submitter.transaction() as tx:
        kept = await tx.add(JobRequest(kind="echo", input=ECHO), tenant="a")
    assert (await get_job(engine, tenant="a", job_id=kept.id)).status is JobStatus.QUEUED
    assert 'inferline_jobs_submitted_total{kind="echo"} 1.0' in metrics.render().decode()


async def test_jobs_added_in_a_transaction_are_validated_by_their_kind(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    submitter = Submitter(engine, registry, default_max_attempts=3)
    with pytest.raises(InvalidInput) as refused:
        async with submitter.transaction() as tx:
            await tx.add(JobRequest(kind="echo", input={"steps": 1}), tenant="a")
    assert refused.value.field == "input.message"


async def stored_job(engine: AsyncEngine, job_id: str) -> object:
    async with engine.connect() as conn:
        return await JobStore(conn).get(job_id)


async def test_idempotency_keys_compare_byte_for_byte(engine: AsyncEngine, registry: KindRegistry) -> None:
    """ "k", "K" and "k " are three keys on every engine (MariaDB's default collations fold case or pad)."""
    submitter = Submitter(engine, registry, default_max_attempts=3)
    request = JobRequest(kind="echo", input={"message": "m"})
    made = [await submitter.submit(request, tenant="a", idempotency_key=key) for key in ("k", "K", "k ", "k")]
    assert [created for _, created in made] == [True, True, True, False]
    assert len({job.id for job, _ in made}) == 3 and made[3][0].id == made[0][0].id


async def start_webhooks(engine: AsyncEngine) -> list[str]:
    async with db.read(engine) as conn:
        query = sa.select(webhook_deliveries.c.job_id).where(webhook_deliveries.c.event == "start")
        return list((await conn.execute(query)).scalars())


async def test_a_claim_writes_the_start_webhooks_of_the_jobs_that_ask_for_one(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    hooked = await submit(engine, registry, webhook="https://93.184.216.34/hook", webhook_events=["start"])
    await submit(engine, registry, webhook="https://93.184.216.34/hook", webhook_events=["completed"])
    await submit(engine, registry)
    assert len(await claim(engine)) == 3
    assert await start_webhooks(engine) == [hooked]


async def test_jobs_whose_start_webhook_cannot_be_written_go_back_to_the_queue(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """PostgreSQL claims in one statement committed on its own, and writes START webhooks after it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("claims and their webhooks share a transaction on this engine")
    hooked = await submit(engine, registry, webhook="https://93.184.216.34/hook", webhook_events=["start"])
    plain = await submit(engine, registry)
    async with db.write(engine) as conn:
        await conn.execute(
            sa.text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'refused'; END $$")
        )
        await conn.execute(
            sa.text("CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION refuse()")
        )
    with pytest.raises(sa.exc.DBAPIError, match="refused"):
        await claim(engine)
    for job_id in (hooked, plain):
        job = await get_job(engine, tenant="a", job_id=job_id)
        assert job.status is JobStatus.QUEUED and job.attempts == 0 and job.lease_owner is None
    assert await start_webhooks(engine) == []


async def test_a_claim_reads_queued_jobs_in_order_whatever_the_statistics_say(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """Jobs just submitted to a table whose statistics do not show them: the claim still walks its index
    in order and stops after the jobs it takes; before migration 0015 it read and sorted every queued job
    (a bitmap scan, then a sort)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    now = utcnow()
    async with db.write(engine) as conn:  # one insert of 5,000: no analyze runs in between
        request = JobRequest(kind="echo", input=ECHO)
        await JobStore(conn).add([new_job(request, tenant="a", now=now, default_max_attempts=3) for _ in range(5000)])
    candidates = statements.claim_candidates(("echo", "other")).params(now=utcnow(), limit=64)
    async with db.read(engine) as conn:
        text = str(candidates.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = "\n".join((await conn.execute(sa.text("EXPLAIN " + text))).scalars())
    assert "Index Scan using ix_jobs_claim" in plan and "Sort" not in plan, plan


class _RolledBack(Exception):
    pass


def _sql_literal(value: object) -> str:
    """A test's own value as SQL text (EXECUTE takes no parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_sql_literal(item) for item in value) + "]::text[]"
    if isinstance(value, float | int):
        return repr(value)
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text.replace("'", "''") + "'"


async def test_a_finish_reaches_each_row_by_primary_key_whatever_the_statistics_say(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """Statistics taken while no job ran, 128 jobs running, and the finish planned as a prepared statement is
    after its fifth run (generically): each row is locked by primary key, and nothing is read again for
    each row. The statement before looked every row up through a partial index over all
    running jobs, or rescanned its values for each row (17-20 ms per finish of 64, against ~4 ms)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    now = utcnow()
    async with db.write(engine) as conn:
        request = JobRequest(kind="echo", input=ECHO)
        await JobStore(conn).add([new_job(request, tenant="a", now=now, default_max_attempts=3) for _ in range(300)])
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("ANALYZE jobs"))
    ids = sorted(await claim(engine, owner="w1", limit=128))
    values = {"finished_at": now, "lease_expires_at": None, "lease_owner": None, "progress": 100.0}
    values |= {"result": "{}", "status": "succeeded", "updated_at": now}
    compiled = statements.finish_group_statement((), tuple(values)).compile(dialect=engine.dialect)
    arguments = {"_ids": ids, "_owner": "w1"} | {f"s_{column}": value for column, value in values.items()}
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET plan_cache_mode = force_generic_plan")
        await raw.execute(f"PREPARE finish AS {compiled.string}")
        literals = ", ".join(_sql_literal(arguments[name]) for name in compiled.positiontup or [])
        with pytest.raises(_RolledBack):
            async with raw.transaction():  # the plan is what is tested: the finish itself is rolled back
                rows = await raw.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE finish({literals})")
                raise _RolledBack
    plan = "\n".join(row[0] for row in rows)
    # A node run once per row (loops > 1) returns at most that row: none reads other jobs or values again.
    rescanned = [line for line in plan.splitlines() if re.search(r"rows=([2-9]|\d{2,}) loops=([2-9]|\d{2,})\)", line)]
    assert "rows=128 loops=1" in plan.splitlines()[0] and not rescanned, plan
    assert "ix_jobs_running" not in plan and "ix_jobs_status_kind" not in plan, plan


async def test_the_planner_is_given_the_jobs_tables_statistics_once_rows_are_written(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """A new PostgreSQL database has no statistics of the jobs table until autovacuum's first ANALYZE, a
    minute or more after the first burst of jobs: below `min_rows` written the worker's reaper waits, past
    it the statistics are taken, once. Other engines need none."""
    on_postgresql = engine.dialect.name == "postgresql"

    async def known() -> bool:
        async with db.read(engine) as conn:
            query = "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'jobs' AND attname = 'status')"
            return bool(await conn.scalar(sa.text(query)))

    async def add(count: int) -> None:
        async with db.write(engine) as conn:
            request = JobRequest(kind="echo", input=ECHO)
            await JobStore(conn).add(
                [new_job(request, tenant="a", now=utcnow(), default_max_attempts=3) for _ in range(count)]
            )

    async def written() -> int:  # as the statistics system counts them, which lags by up to a second
        async with db.read(engine) as conn:
            query = "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'jobs'"
            return int(await conn.scalar(sa.text(query)) or 0)

    await add(10)
    if not on_postgresql:
        assert await ensure_claim_statistics(engine, min_rows=100)
        return
    await eventually(written, lambda count: count >= 10)
    assert not await ensure_claim_statistics(engine, min_rows=100)
    assert not await known()
    await add(200)
    await eventually(lambda: ensure_claim_statistics(engine, min_rows=100))
    assert await known() and await written() == 0


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def test_claims_from_a_place_skip_the_queue_before_it_until_the_rescan(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """A worker draining a backlog starts each claim at the place of the first job its last claim took;
    a job placed before it (here a higher priority) is taken once the queue is read whole again, at the
    latest `rescan_s` after the last whole read."""
    if engine.dialect.name == "mysql":
        pytest.skip("MariaDB reads the whole queue (InnoDB purges the entries of claimed jobs by itself)")
    clock = _Clock()
    start = ClaimStart(rescan_s=0.25, clock=clock)
    backlog = [await submit(engine, registry) for _ in range(10)]
    assert await claim(engine, limit=4, start=start) == backlog[:4]
    assert start.place() is not None
    urgent = await submit(engine, registry, priority=1)
    clock.now_s = 0.2
    assert await claim(engine, limit=4, start=start) == backlog[4:8]  # from the place: the urgent job is before it
    clock.now_s = 0.25
    assert start.place() is None
    assert await claim(engine, limit=1, start=start) == [urgent]
    assert await claim(engine, limit=1, start=start) == [backlog[8]]


async def test_a_claim_from_a_place_that_comes_back_short_reads_the_queue_whole(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """Jobs before the place are not left waiting when the backlog after it runs out: the same claim reads
    the queue from its start, and the next one does too."""
    if engine.dialect.name == "mysql":
        pytest.skip("MariaDB reads the whole queue (InnoDB purges the entries of claimed jobs by itself)")
    start = ClaimStart(rescan_s=3600, clock=_Clock())
    backlog = [await submit(engine, registry) for _ in range(6)]
    assert await claim(engine, limit=4, start=start) == backlog[:4]
    urgent = await submit(engine, registry, priority=1)
    assert sorted(await claim(engine, limit=4, start=start)) == sorted([*backlog[4:], urgent])
    assert start.place() is None
    late = await submit(engine, registry, priority=2)
    assert await claim(engine, limit=4, start=start) == [late]


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("failure", [ConnectionError, asyncio.CancelledError])
async def test_a_failed_read_from_the_start_after_a_short_claim_from_the_place_strands_no_job(
    engine: AsyncEngine,
    registry: KindRegistry,
    monkeypatch: pytest.MonkeyPatch,
    failure: type[BaseException],
    log_records: Any,
) -> None:
    """The claim from the place committed; the read from the queue's start that follows it fails: an error
    leaves the jobs claimed to their worker (and the next claim reads the whole queue), a cancellation gives
    them back to the queue, the attempt not counted. Either way none waits for its lease to expire."""
    if engine.dialect.name == "mysql":
        pytest.skip("MariaDB reads the whole queue (InnoDB purges the entries of claimed jobs by itself)")
    start = ClaimStart(rescan_s=3600, clock=_Clock())
    backlog = [await submit(engine, registry) for _ in range(6)]
    assert await claim(engine, limit=4, start=start) == backlog[:4]
    real = service._Claims.take

    async def failing(self: Any, count: int, from_place: tuple[int, int] | None) -> list[Any]:
        if from_place is None:
            raise failure("the read from the start")
        return await real(self, count, from_place)

    monkeypatch.setattr(service._Claims, "take", failing)
    if failure is asyncio.CancelledError:
        with pytest.raises(asyncio.CancelledError):
            await claim(engine, limit=4, start=start)
        for job_id in backlog[4:]:
            job = await get_job(engine, tenant="a", job_id=job_id)
            assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
        return
    assert await claim(engine, limit=4, start=start) == backlog[4:]
    assert start.place() is None
    assert [event["event"] for event in log_records.errors()] == ["claim_from_the_start_failed"]


async def test_a_claim_from_a_place_takes_the_jobs_at_that_place(engine: AsyncEngine, registry: KindRegistry) -> None:
    """Another tenant's job given the same seq as the place (it joined at the queue's head) is not skipped,
    and the lower priorities after it are read too; a higher priority, before it, waits for the rescan."""
    if engine.dialect.name == "mysql":
        pytest.skip("MariaDB reads the whole queue (InnoDB purges the entries of claimed jobs by itself)")
    clock = _Clock()
    start = ClaimStart(rescan_s=0.25, clock=clock)
    mine = [await submit(engine, registry, tenant="a") for _ in range(3)]
    theirs = await submit(engine, registry, tenant="b")  # the head's seq: mine[0]'s, and a later id
    assert await claim(engine, limit=1, start=start) == [mine[0]]
    urgent = await submit(engine, registry, tenant="c", priority=1)
    assert await claim(engine, limit=1, start=start) == [theirs]
    low = await submit(engine, registry, tenant="d", priority=5)
    assert await claim(engine, limit=3, start=start) == [mine[1], mine[2], low]  # all it asked for: no rescan
    assert (await get_job(engine, tenant="c", job_id=urgent)).status is JobStatus.QUEUED
    clock.now_s = 0.25
    assert await claim(engine, limit=3, start=start) == [urgent]


async def test_a_claim_from_its_place_steps_over_none_of_the_entries_claimed_jobs_left_in_the_index(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """PostgreSQL keeps a claimed job's old entry in the claim index until a VACUUM, at the front of the
    queue's order: a claim from the queue's start reads every one of them, a claim from its place goes
    down to the place (docs/jobs.md)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's index")
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("ALTER TABLE jobs SET (autovacuum_enabled = false)"))
    now = utcnow()
    async with db.write(engine) as conn:
        request = JobRequest(kind="echo", input=ECHO)
        await JobStore(conn).add([new_job(request, tenant="a", now=now, default_max_attempts=3) for _ in range(3000)])
    for _ in range(45):
        assert len(await claim(engine, limit=64)) == 64
    async with db.read(engine) as conn:
        head = (await conn.execute(sa.text("SELECT min(fair_seq) FROM jobs WHERE status = 'queued'"))).scalar_one()

    async def pages_read(from_place: bool) -> int:
        candidates = statements.claim_candidates(("echo",), from_place).params(
            now=utcnow(), limit=64, from_priority=3, from_seq=head
        )
        async with db.read(engine) as conn:
            text = str(candidates.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            plan = (await conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text))).scalar_one()
        scans = []

        def walk(node: dict[str, object]) -> None:
            if node["Node Type"] == "Index Scan":
                scans.append(node)
            for child in node.get("Plans", []):  # type: ignore[attr-defined]
                walk(child)

        walk(plan[0]["Plan"])
        assert [scan["Index Name"] for scan in scans] == ["ix_jobs_claim"], plan
        return int(scans[0]["Shared Hit Blocks"]) + int(scans[0]["Shared Read Blocks"])

    # The claims above marked the entries they stepped over dead: read page by page, not followed to the table.
    from_start, from_place = await pages_read(False), await pages_read(True)
    assert from_place <= 10, from_place  # the descent, and the leaf pages of 64 entries
    assert from_start >= 4 * from_place, (from_start, from_place)


async def _index_pages_read(engine: AsyncEngine, statement: sa.Select[Any], params: dict[str, object]) -> int:
    """Pages of the claim index that PostgreSQL read to run `statement` (its literal text, analyzed)."""
    async with db.read(engine) as conn:
        text = str(statement.params(**params).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = (await conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text))).scalar_one()
    pages = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal pages
        if node.get("Index Name") == "ix_jobs_claim":
            pages += int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return pages


async def test_a_submission_looks_for_the_queues_head_from_the_head_it_saw_last(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """After a drain, a tenant arriving still gets the seq at the queue's head, and the look for it goes
    down to the head this process saw before instead of stepping over every claimed job's dead entry
    (docs/jobs.md)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's index")
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("ALTER TABLE jobs SET (autovacuum_enabled = false)"))
    store._HEADS_SEEN[engine.sync_engine] = lanes.HeadHints(relook_s=3600)
    await submit(engine, registry, tenant="a")  # this process sees the head: this job's seq
    async with db.write(engine) as conn:
        request = JobRequest(kind="echo", input=ECHO)
        await JobStore(conn).add(
            [new_job(request, tenant="a", now=utcnow(), default_max_attempts=3) for _ in range(3000)]
        )
    for _ in range(45):
        assert len(await claim(engine, limit=64)) == 64
    async with db.read(engine) as conn:
        head = (await conn.execute(sa.text("SELECT min(fair_seq) FROM jobs WHERE status = 'queued'"))).scalar_one()
    arriving = await get_job(engine, tenant="b", job_id=await submit(engine, registry, tenant="b"))
    assert arriving.fair_seq == head
    assert store._HEADS_SEEN[engine.sync_engine].hint(3) == head

    look = sa.select(lanes.queue_head(sa.bindparam("priority", type_=sa.Integer), hinted=True))
    from_start = await _index_pages_read(engine, look, {"priority": 3, "head_hint": lanes.NO_HINT})
    from_hint = await _index_pages_read(engine, look, {"priority": 3, "head_hint": head})
    assert from_hint <= 6, from_hint
    assert from_start >= 4 * from_hint, (from_start, from_hint)


async def test_a_job_put_back_before_the_head_seen_leaves_arrivals_at_the_front_of_the_rest(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """A job back at its old place, before the head this process saw, is not taken for the head: a tenant
    arriving is placed at the smallest queued seq after it, still ahead of every other tenant's queued
    work, or with nothing queued after it at the newest seq given; the job put back is claimed first."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's hint")
    clock = _Clock()
    store._HEADS_SEEN[engine.sync_engine] = lanes.HeadHints(relook_s=1.0, clock=clock)
    old = [await submit(engine, registry, tenant="a") for _ in range(3)]
    assert await claim(engine, limit=2) == old[:2]
    await submit(engine, registry, tenant="a")  # seen: old[2]'s seq
    await _put_back(engine, old[0])
    seqs = {job_id: (await get_job(engine, tenant="a", job_id=job_id)).fair_seq for job_id in old}
    b = await submit(engine, registry, tenant="b")
    assert (await get_job(engine, tenant="b", job_id=b)).fair_seq == seqs[old[2]] > seqs[old[0]]
    assert await claim(engine, limit=2) == [old[0], old[2]]
    assert b in await claim(engine, limit=10)  # and a's last: nothing queued now
    await _put_back(engine, old[1])
    c = await submit(engine, registry, tenant="c")
    assert (await get_job(engine, tenant="c", job_id=c)).fair_seq > seqs[old[1]]  # the trade-off (docs/jobs.md)
    assert await claim(engine, limit=10) == [old[1], c]
    await _put_back(engine, old[1])
    clock.now_s = 1.0  # the head looked for from the priority's start again: the job put back is the head
    d = await submit(engine, registry, tenant="d")
    assert (await get_job(engine, tenant="d", job_id=d)).fair_seq == seqs[old[1]]


async def _put_back(engine: AsyncEngine, job_id: str) -> None:
    """A running job back in the queue at its old place, as a retry or an expired lease puts it."""
    async with db.write(engine) as conn:
        values = {"status": "queued", "lease_owner": None, "lease_expires_at": None}
        await conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
