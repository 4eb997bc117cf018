"""The job metrics of the whole fleet, read from the jobs table: each fleet-wide (tenant "") and per
tenant, so a tenant can read its own."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.jobs.model import TERMINAL_STATUSES, JobStatus
from inferline.jobs.statements import QUEUED, RUNNING
from inferline.monitor.samples import FLEET, Sample
from inferline.schema import jobs

RECENT_S = 300  # the window of the failure ratio and the latency percentiles
QUANTILES = (0.5, 0.95, 0.99)
MAX_RECENT_JOBS = 20_000  # the newest ones, when more ended in the window
_ENDED = tuple(status.value for status in TERMINAL_STATUSES)

Key = tuple[str, str, tuple[tuple[str, str], ...]]  # (metric, tenant, labels)


def _with_fleet(counts: Counter[Key]) -> list[Sample]:
    """Each tenant's series, and their sums as the fleet's."""
    fleet: Counter[Key] = Counter()
    for (name, _tenant, labels), value in counts.items():
        fleet[(name, FLEET, labels)] += value
    return [
        Sample(name, float(value), dict(labels), tenant) for (name, tenant, labels), value in (counts + fleet).items()
    ]


def queue_depth_query() -> sa.CompoundSelect[Any]:
    """The queued and the running jobs by (status, tenant, kind), in one statement, so on one snapshot: a
    job claimed between two statements was counted in both or in neither. A branch per status, named as a
    literal: each reads only its partial index's rows (`ix_jobs_claim`, `ix_jobs_status_kind`), where
    `status IN (...)` read the whole table, finished jobs and all."""
    j = jobs

    def depth(literal: sa.ColumnClause[str]) -> sa.Select[Any]:
        counted = sa.select(j.c.status, j.c.tenant, j.c.kind, sa.func.count()).where(j.c.status == literal)
        return counted.group_by(j.c.status, j.c.tenant, j.c.kind)

    return sa.union_all(depth(QUEUED), depth(RUNNING))


def finished_query(since: datetime) -> sa.Select[Any]:
    """The jobs ended since `since` by (tenant, kind, status), found through `ix_jobs_finished_at`: the
    sampler asks every few seconds, and a table of every job ever finished must not be read each time."""
    j = jobs
    ended = sa.select(j.c.tenant, j.c.kind, j.c.status, sa.func.count()).where(
        j.c.finished_at >= since, j.c.status.in_(_ENDED)
    )
    return ended.group_by(j.c.tenant, j.c.kind, j.c.status)


def started_query(since: datetime) -> sa.CompoundSelect[Any]:
    """The jobs first started since `since` by (tenant, kind), one row per status branch. A job's
    `started_at` is set once, at its first claim, and it ends no earlier, so a job started since then is
    queued again (a retry), running, or ended since then: three index reads (the queued and the running
    jobs' partial indexes, `ix_jobs_finished_at`), where `started_at >= since` alone read every row."""
    j = jobs

    def branch(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        counted = sa.select(j.c.tenant, j.c.kind, sa.func.count()).where(*where, j.c.started_at >= since)
        return counted.group_by(j.c.tenant, j.c.kind)

    return sa.union_all(
        branch(j.c.status == QUEUED),
        branch(j.c.status == RUNNING),
        branch(j.c.finished_at >= since, j.c.status.in_(_ENDED)),
    )


async def job_samples(conn: AsyncConnection, now: datetime) -> list[Sample]:
    minute_ago = now - timedelta(seconds=60)
    counts: Counter[Key] = Counter()
    for status, tenant, kind, count in await conn.execute(queue_depth_query()):
        counts[("queue_depth", tenant, (("kind", kind), ("status", status)))] += count
    for tenant, kind, status, count in await conn.execute(finished_query(minute_ago)):
        counts[("jobs_finished_per_min", tenant, (("kind", kind), ("status", status)))] += count
    for tenant, kind, count in await conn.execute(started_query(minute_ago)):
        counts[("jobs_started_per_min", tenant, (("kind", kind),))] += count
    return _with_fleet(counts) + await _recent_samples(conn, now)


def _duration_s(dialect: str) -> sa.ColumnElement[Any]:
    """A job's start-to-end seconds, computed by the database: the sampler reads up to MAX_RECENT_JOBS rows
    per interval, and two datetimes made per row in Python were most of what it cost a busy worker."""
    j = jobs
    if dialect == "postgresql":
        return sa.func.extract("epoch", j.c.finished_at - j.c.started_at)
    if dialect == "mysql":
        return sa.func.timestampdiff(sa.text("MICROSECOND"), j.c.started_at, j.c.finished_at) / 1e6
    # SQLite keeps them as ISO text; julianday's days are precise to ~50 µs at today's dates.
    return (sa.func.julianday(j.c.finished_at) - sa.func.julianday(j.c.started_at)) * 86400.0


def recent_query(dialect: str, since: datetime) -> sa.Select[Any]:
    """The newest MAX_RECENT_JOBS jobs ended since `since`, with their seconds from start to end, read
    backwards along `ix_jobs_finished_at`."""
    j = jobs
    return (
        sa.select(j.c.tenant, j.c.kind, j.c.status, _duration_s(dialect))
        .where(j.c.finished_at >= since, j.c.status.in_(_ENDED))
        .order_by(j.c.finished_at.desc())
        .limit(MAX_RECENT_JOBS)
    )


async def _recent_samples(conn: AsyncConnection, now: datetime) -> list[Sample]:
    query = recent_query(conn.dialect.name, now - timedelta(seconds=RECENT_S))
    ended: dict[tuple[str, str], list[tuple[str, float | None]]] = defaultdict(list)
    for tenant, kind, status, seconds in await conn.execute(query):
        duration_s = float(seconds) if seconds is not None else None  # never started (canceled while queued)
        for scope in (tenant, FLEET):
            ended[(scope, kind)].append((status, duration_s))
    samples = []
    for (tenant, kind), rows in ended.items():
        failed = sum(status == JobStatus.FAILED.value for status, _ in rows)
        samples.append(Sample("job_failure_ratio", failed / len(rows), {"kind": kind}, tenant))
        samples.extend(_latency(tenant, kind, [d for _, d in rows if d is not None]))
    return samples


def _latency(tenant: str, kind: str, durations_s: Iterable[float]) -> list[Sample]:
    ordered = sorted(durations_s)
    if not ordered:
        return []
    return [
        Sample(
            "job_latency_s",
            ordered[max(0, math.ceil(q * len(ordered)) - 1)],
            {"kind": kind, "quantile": str(q)},
            tenant,
        )
        for q in QUANTILES
    ]
