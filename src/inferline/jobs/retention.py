"""Retention of ended jobs: with `jobs_retention_s` set, a job that ended (succeeded, failed or canceled)
longer ago than that is deleted with its `job_files` rows and its webhook deliveries, oldest first, in
chunks, by one process of the fleet at a time (a lease, as the monitor's loops hold theirs).

Kept past retention, because something still reads the row:
- a job a webhook delivery still waits to send (deleted after it is delivered or fails);
- a child whose parent has not ended: the parent reads its children's rows until all have succeeded;
- the job a batch or a media project names as its own: their shown status is read from it (one job per
  batch or project, the latest).
Deleting a job frees its idempotency key: a request with the key after that makes a new job.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db, leases
from inferline.clock import utcnow
from inferline.jobs.children import key_prefix
from inferline.metrics import Metrics
from inferline.schema import batches, job_files, jobs, media_projects, webhook_deliveries

log = structlog.get_logger(__name__)

LEASE = "jobs_retention"
CHUNK_JOBS = 500  # one transaction's deletes: short enough not to hold the writer (SQLite) for long
_CHILD_PREFIX = key_prefix("")[:-1]  # a child's key: this, its parent's id (36 characters), ":", its role
_ID_CHARS = 36


def _purgeable(before: datetime) -> sa.ColumnElement[bool]:
    """Jobs ended before `before` that nothing reads any more (the module docstring's list)."""
    parent = jobs.alias("parent")
    parent_id = sa.func.substr(jobs.c.idempotency_key, len(_CHILD_PREFIX) + 1, _ID_CHARS)
    d = webhook_deliveries
    return sa.and_(
        # A job has `finished_at` exactly while it has ended (a retry clears it), so its status is not
        # tested: SQLite would read every ended job by `ix_jobs_status_kind` for that, then sort them.
        # `IS NOT NULL` spelled out: SQLite uses the partial index `ix_jobs_finished_at` only then.
        jobs.c.finished_at.is_not(None),
        jobs.c.finished_at < before,
        ~sa.exists().where(d.c.job_id == jobs.c.id, d.c.status == "pending"),
        ~sa.exists().where(batches.c.job_id == jobs.c.id),
        ~sa.exists().where(media_projects.c.active_job_id == jobs.c.id),
        # One anti-join by the parent's primary key (as an OR beside the key's test, PostgreSQL read every
        # unended job into a hash instead).
        ~sa.exists().where(
            parent.c.id == parent_id,
            parent.c.finished_at.is_(None),
            jobs.c.idempotency_key.startswith(_CHILD_PREFIX, autoescape=True),
        ),
    )


@dataclass(frozen=True)
class Purged:
    by_kind: dict[str, int]  # jobs deleted
    last_ended: datetime | None  # when the last of them ended

    @property
    def jobs(self) -> int:
        return sum(self.by_kind.values())


def purgeable_query(
    before: datetime, limit: int, *, since: datetime | None = None
) -> sa.Select[tuple[str, str, datetime]]:
    """The ids (kinds, end times) of up to `limit` jobs ended before `before` (and not before `since`) that
    nothing reads, oldest first, locked: a retry of one of them waits for the purge's transaction, then
    finds it gone. Through `ix_jobs_finished_at` (the jobs of the window, not every job ever ended)."""
    where = _purgeable(before)
    if since is not None:
        where = sa.and_(where, jobs.c.finished_at >= since)
    return (
        sa.select(jobs.c.id, jobs.c.kind, jobs.c.finished_at)
        .where(where)
        .order_by(jobs.c.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=jobs)
    )


async def purge_ended(
    conn: AsyncConnection, before: datetime, *, since: datetime | None = None, limit: int = CHUNK_JOBS
) -> Purged:
    """Delete up to `limit` jobs that ended before `before` (and not before `since`) and that nothing reads,
    oldest first, with their `job_files` rows and webhook deliveries, in the caller's transaction."""
    rows = (await conn.execute(purgeable_query(before, limit, since=since))).all()
    if not rows:
        return Purged({}, None)
    ids = [row.id for row in rows]
    await conn.execute(webhook_deliveries.delete().where(webhook_deliveries.c.job_id.in_(ids)))
    await conn.execute(job_files.delete().where(job_files.c.job_id.in_(ids)))
    await conn.execute(jobs.delete().where(jobs.c.id.in_(ids)))  # locked above: every one of them
    return Purged(dict(collections.Counter(row.kind for row in rows)), max(row.finished_at for row in rows))


class Retention:
    """The loop that deletes ended jobs past `retention_s`, while this process holds the lease."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        retention_s: float,
        every_s: float = 10.0,
        step_s: float = 5.0,
        rescan_s: float = 600.0,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.retention_s = retention_s
        self.every_s = every_s
        self.step_s = step_s  # one step's time: a large backlog is worked off over several
        # Kept jobs (above) stay at the oldest end of the index: rounds go on from where the last deletion
        # was, not through all of them again, and look at them anew every `rescan_s`.
        self.rescan_s = rescan_s
        self._since: datetime | None = None
        self._scan_started = 0.0

    async def run(self, stop: asyncio.Event, *, owner: str | None = None) -> None:
        ttl_s = max(self.every_s * 3, self.step_s * 3, leases.MIN_TTL_S)
        await leases.run_elected(
            self.engine, LEASE, self.step, every_s=self.every_s, stop=stop, owner=owner, ttl_s=ttl_s
        )

    async def step(self, lease: leases.Lease) -> int:
        """Delete ended jobs past retention in chunks, for at most `step_s`; returns how many."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.step_s
        if self._since is not None and loop.time() - self._scan_started >= self.rescan_s:
            self._since = None
        if self._since is None:
            self._scan_started = loop.time()
        before = utcnow() - timedelta(seconds=self.retention_s)
        total = 0
        while True:
            async with db.write(self.engine, slow=True) as conn:
                await leases.confirm(conn, lease)
                purged = await purge_ended(conn, before, since=self._since)
            self._since = purged.last_ended or self._since
            total += purged.jobs
            for kind, count in purged.by_kind.items():
                self.metrics.jobs_purged.labels(kind).inc(count)
            if purged.jobs < CHUNK_JOBS or loop.time() >= until:
                break
        if total:
            log.info("jobs_purged", jobs=total, ended_before=before.isoformat())
        return total
