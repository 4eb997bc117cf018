"""Use cases of the job core after submission (`submission.py` creates jobs). Each opens and commits its
own transaction."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NotFound
from inferline.events import outbox
from inferline.jobs import heartbeats, webhooks
from inferline.jobs.children import cancel_children
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, WebhookEvent
from inferline.jobs.outcomes import give_back
from inferline.jobs.store import JobStore
from inferline.jobs.wakeup import Wakeup

log = structlog.get_logger(__name__)


async def get_job(engine: AsyncEngine, *, tenant: str, job_id: str) -> Job:
    async with db.read(engine) as conn:
        job = await JobStore(conn).get(job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


async def list_jobs(
    engine: AsyncEngine,
    *,
    tenant: str,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    async with db.read(engine) as conn:
        return await JobStore(conn).page(tenant=tenant, status=status, kind=kind, limit=limit, cursor=cursor)


async def cancel_job(engine: AsyncEngine, *, tenant: str, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker sees it within a heartbeat). The
    jobs it submitted through `ChildJobs` are canceled with it."""
    now = utcnow()
    async with db.write(engine) as conn:
        store = JobStore(conn)
        job = await store.get(job_id, tenant=tenant, lock=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        updated = job.cancel(now)
        await store.save(updated, expect_status=job.status)
        if updated.status is JobStatus.CANCELED:
            await webhooks.enqueue(conn, updated, WebhookEvent.COMPLETED, now)
        children = await cancel_children(conn, tenant=tenant, parent_id=job_id)
    heartbeats.stop_here(engine, (job.id for job in [updated, *children] if job.status is JobStatus.RUNNING))
    return updated


async def retry_job(
    engine: AsyncEngine,
    *,
    tenant: str,
    job_id: str,
    wakeup: Wakeup | None = None,
    registry: KindRegistry | None = None,
) -> Job:
    """A failed job queued again; its kind's `on_queue` runs first (a pipeline claims its project again:
    409 while another run of it has not ended)."""
    async with db.write(engine) as conn:
        store = JobStore(conn)
        job = await store.get(job_id, tenant=tenant, lock=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        again = job.retry(utcnow())
        if registry is not None:
            await registry.queued(conn, again)
        requeued = await store.requeue(again)
        if requeued is None:  # not after the lock above; said anyway rather than assumed
            raise NotFound(f"job {job_id} not found")
    if wakeup is not None:
        wakeup.notify((requeued.kind,))
    return requeued


class ClaimStart:
    """Where a worker's claims start reading the queue on PostgreSQL, while it drains a backlog.

    A claim makes a new version of each row it takes, and the old version's entry stays in the claim index,
    dead, at the front of the queue's order until a VACUUM removes it; a claim that reads the queue from its
    start steps over every such entry first: 1.6 ms per claim of 64 once 100,000 jobs had been claimed,
    against 0.1 ms after a VACUUM (docs/jobs.md). So, after a claim that took all it asked for, the next
    ones start at the place of the first job it took, which one descent of the index reaches, and the
    queue is read from its start again at least every `rescan_s`, and whenever a claim from the place
    comes back short. A job placed before that place meanwhile (a higher priority, a retry back at its old
    place when its backoff ends, a delayed job coming due, one skipped while another claim held it) waits
    for that read: about `rescan_s` longer, and only while the worker has more queued work than slots.
    """

    def __init__(self, rescan_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rescan_s = rescan_s
        self._clock = clock
        self._place: tuple[int, int] | None = None
        self._read_whole_at = -math.inf

    def place(self) -> tuple[int, int] | None:
        """The place the next claim starts at; None: the start of the queue."""
        if self._place is None or self._clock() - self._read_whole_at >= self.rescan_s:
            return None
        return self._place

    def claimed(self, jobs: Sequence[Job], limit: int, *, read_whole: bool) -> None:
        if read_whole:
            self._read_whole_at = self._clock()
        # A claim that took fewer than it asked for reached the queue's end (or its read from the start
        # failed, see `claim_jobs`): the next one reads it whole.
        self._place = min((job.priority, job.fair_seq) for job in jobs) if len(jobs) >= limit > 0 else None


async def claim_jobs(
    engine: AsyncEngine,
    *,
    owner: str,
    kinds: Sequence[str],
    limit: int,
    lease_s: float,
    kind_limits: Mapping[str, int],
    start: ClaimStart | None = None,
) -> list[Job]:
    """Lease up to `limit` runnable jobs of `kinds` to `owner`, in fair order; their START webhooks are
    enqueued before they are returned. The claim commits without waiting for the disk (`JobStore.claim`).
    With `start` (PostgreSQL), the queue is read from the place it keeps; a claim from there that comes
    back short is followed at once by one from the queue's start, which may hold jobs placed before it.
    Where a place is not honoured (MariaDB, a kind with a concurrency limit among `kinds`), `start` is
    not used."""
    claims = _Claims(engine, owner, kinds, lease_s, kind_limits)
    if engine.dialect.name == "mysql" or any(kind in kind_limits for kind in kinds):
        start = None
    place = start.place() if start is not None else None
    claimed = await claims.take(limit, place)
    read_whole = place is None
    if not read_whole and len(claimed) < limit:
        try:
            claimed += await claims.take(limit - len(claimed), None)
            read_whole = True
        except Exception:  # the jobs already claimed run; the queue's start is read at the next claim
            log.exception("claim_from_the_start_failed", owner=owner)
        except BaseException:  # a cancellation: the jobs claimed go back, as `_announce_start` gives them
            with contextlib.suppress(Exception):
                await give_back(engine, owner, claimed)
            raise
    if start is not None:
        start.claimed(claimed, limit, read_whole=read_whole)
    return claimed


@dataclass(frozen=True)
class _Claims:
    """One worker's claims: `take` leases up to `count` jobs, from `from_place` on (see `ClaimStart`)."""

    engine: AsyncEngine
    owner: str
    kinds: Sequence[str]
    lease_s: float
    kind_limits: Mapping[str, int]

    async def take(self, count: int, from_place: tuple[int, int] | None) -> list[Job]:
        now = utcnow()
        if not _claims_in_one_statement(self.engine, self.kinds, self.kind_limits):
            async with db.write(self.engine) as conn:
                claimed = await self._claim(conn, count, now, from_place)
                for job in claimed:
                    await webhooks.enqueue(conn, job, WebhookEvent.START, now)
            return claimed
        # One statement committed on its own: one round trip instead of three (BEGIN, claim, COMMIT), which on
        # a busy machine is most of a claim's time (each round trip waits for the server's process and then for
        # this one to be scheduled; docs/benchmarks.md, issue 20).
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            claimed = await self._claim(conn, count, now, from_place)
        if any(job.wants(WebhookEvent.START) for job in claimed):
            await _announce_start(self.engine, self.owner, claimed, now)
        return claimed

    async def _claim(
        self, conn: AsyncConnection, count: int, now: datetime, from_place: tuple[int, int] | None
    ) -> list[Job]:
        store = JobStore(conn)
        return await store.claim(
            owner=self.owner,
            kinds=self.kinds,
            limit=count,
            now=now,
            lease_s=self.lease_s,
            kind_limits=self.kind_limits,
            from_place=from_place,
        )


def _claims_in_one_statement(engine: AsyncEngine, kinds: Sequence[str], kind_limits: Mapping[str, int]) -> bool:
    """PostgreSQL, no events to write with the claim (the outbox row goes in its transaction), and no kind
    with a concurrency limit among `kinds` (counting and claiming take a lock for the transaction)."""
    if engine.dialect.name != "postgresql" or engine.get_execution_options().get(outbox.EVENTS_OPTION, False):
        return False
    return not any(kind in kind_limits for kind in kinds)


async def _announce_start(engine: AsyncEngine, owner: str, claimed: list[Job], now: datetime) -> None:
    """The START webhooks of jobs just claimed by a statement committed on its own, written before any of them
    runs. If that fails, the claimed jobs go back to the queue as a stopping worker gives them back (the
    attempt does not count) and the error is raised: no attempt runs without its START webhook written."""
    try:
        async with db.write(engine) as conn:
            for job in claimed:
                await webhooks.enqueue(conn, job, WebhookEvent.START, now)
    except BaseException:  # a cancellation too (a stopping worker's hung claim loop): none of them runs
        with contextlib.suppress(Exception):  # else their leases expire and the reaper takes them back
            await give_back(engine, owner, claimed)
        raise


# The planner's statistics of the jobs table, on PostgreSQL: whether it has any for `status` (an ANALYZE of
# rows took them), and the rows written since the last ANALYZE. The schema is the table's own, wherever the
# search path finds it.
_STATISTICS = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'jobs' AND attname = 'status' AND schemaname = "
    "(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'jobs'::regclass)), "
    "(SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass)"
)
STATISTICS_MIN_ROWS = 1000


async def ensure_claim_statistics(engine: AsyncEngine, *, min_rows: int = STATISTICS_MIN_ROWS) -> bool:
    """Give the planner statistics of the jobs table if it has none while `min_rows` rows were written
    (PostgreSQL; other engines need none); True once it has them, or when taking them failed (autovacuum
    will): the worker then stops asking.

    Without them (a new database, or one analyzed while empty) the planner takes `status = 'queued'` for
    0.5% of the rows and plans each claim as a read of every queued job and a sort: 20-28 ms per claim of
    64 at 20,000 queued, against 0.3 ms in the claim index's order, for the minute or more until
    autovacuum's first ANALYZE (docs/benchmarks.md, session 16). With statistics, even ones taken when no
    job was queued, the claim walks its index. The ANALYZE waits at most 2 s for a lock (a migration's, a
    manual VACUUM's): the reaper that runs it does not wait longer."""
    if engine.dialect.name != "postgresql":
        return True
    try:
        async with db.read(engine) as conn:
            known, written = (await conn.execute(_STATISTICS)).one()
        if known:
            return True
        if (written or 0) < min_rows:
            return False
        async with db.write(engine) as conn:
            await conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            await conn.execute(sa.text("ANALYZE jobs"))
        async with db.read(engine) as conn:
            known, _ = (await conn.execute(_STATISTICS)).one()
    except Exception as exc:
        log.warning("jobs_statistics_not_taken", error=repr(exc)[:500])
        return True
    if not known:  # ANALYZE skips a table its role does not own, with a warning only the server logs
        log.warning("jobs_statistics_not_taken", error="ANALYZE jobs took none (does this role own the table?)")
    return True


async def queue_depth(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with db.read(engine, slow=True) as conn:  # counts every queued job
        return await JobStore(conn).queue_depth()
