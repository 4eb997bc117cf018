"""Fairness lanes: start-time fair queuing. Each job gets a `fair_seq` at submission:
`max(tenant's last seq + 1, head of the queue)`, where the head is the smallest queued seq at that
priority (or the newest seq given out when the queue is empty). Claims then read the queue in
(priority, fair_seq, id) order, which is one index scan, and tenants alternate: a tenant arriving
behind another's 10,000 jobs gets the seq at the head and runs next.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from inferline.jobs.model import Job
from inferline.jobs.statements import QUEUED
from inferline.schema import jobs, lanes


def lane_counts(batch: Sequence[Job]) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for job in batch:
        counts[(job.tenant, job.priority)] = counts.get((job.tenant, job.priority), 0) + 1
    return dict(sorted(counts.items()))  # a fixed order: concurrent batches lock lanes alike


def queue_head(priority: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """The smallest queued seq at this priority; with none queued, the newest seq given out."""
    smallest_queued = (
        sa.select(sa.func.min(jobs.c.fair_seq))
        .where(jobs.c.status == QUEUED, jobs.c.priority == priority)
        .scalar_subquery()
    )
    newest_given = sa.select(sa.func.max(lanes.c.last_seq)).where(lanes.c.priority == priority).scalar_subquery()
    return sa.func.coalesce(smallest_queued, newest_given, 0)


@functools.cache
def lane_upsert(dialect: str) -> sa.Insert:
    """k jobs joining a lane whose last seq is `old` take the seqs up to `max(old, head - 1) + k`; the
    statement returns that new last seq. Its row lock also keeps two API processes from handing out the
    same seqs on PostgreSQL. Parameters `tenant`, `priority`, `count`. Built once per dialect: building
    and cache-keying it per batch would cost a sixth of a submission batch's CPU (docs/benchmarks.md)."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(lanes)
    greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
    priority = sa.bindparam("priority", type_=sa.Integer)
    count = sa.bindparam("count", type_=sa.BigInteger)
    head = queue_head(priority)
    return (
        insert.values(tenant=sa.bindparam("tenant", type_=sa.String), priority=priority, last_seq=head - 1 + count)
        .on_conflict_do_update(
            index_elements=[lanes.c.tenant, lanes.c.priority],
            set_={"last_seq": greatest(lanes.c.last_seq, head - 1) + count},
        )
        .returning(lanes.c.last_seq)
    )


def lane_params(tenant: str, priority: int, count: int) -> dict[str, Any]:
    return {"tenant": tenant, "priority": priority, "count": count}


def place(batch: Sequence[Job], lasts: Mapping[tuple[str, int], int]) -> list[Job]:
    """The batch with fair seqs, given each lane's new last seq."""
    next_seq = {key: last - count + 1 for key, count in lane_counts(batch).items() for last in [lasts[key]]}
    placed = []
    for job in batch:
        key = (job.tenant, job.priority)
        placed.append(replace(job, fair_seq=next_seq[key]))
        next_seq[key] += 1
    return placed
