"""Fairness lanes: start-time fair queuing. Each job gets a `fair_seq` at submission:
`max(tenant's last seq + 1, head of the queue)`, where the head is the smallest queued seq at that
priority (or the newest seq given out when the queue is empty). Claims then read the queue in
(priority, fair_seq, id) order, which is one index scan, and tenants alternate: a tenant arriving
behind another's 10,000 jobs gets the seq at the head and runs next.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
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


NO_HINT = -(2**63)  # a `head_hint` below every seq: the look starts at the priority's first entry


class HeadHints:
    """Per priority, the head of the queue a process saw last (`queue_head`'s `head_hint`). The head is
    looked for from the priority's start again every `relook_s`: a hint left above every queued job (jobs
    put back at their old places, a table restored under a running process) would otherwise place every
    tenant arriving behind them until the queue drains past it."""

    def __init__(self, relook_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.relook_s = relook_s
        self._clock = clock
        self._seen: dict[int, tuple[int, float]] = {}  # priority: (head, when it was last looked for whole)

    def hint(self, priority: int) -> int:
        head, looked_whole_at = self._seen.get(priority, (NO_HINT, -math.inf))
        return head if self._clock() - looked_whole_at < self.relook_s else NO_HINT

    def saw(self, priority: int, head: int, hint: int) -> None:
        """The head found by a look from `hint`."""
        looked_whole_at = self._clock() if hint == NO_HINT else self._seen[priority][1]
        self._seen[priority] = (head, looked_whole_at)


def queue_head(priority: sa.ColumnElement[int], hinted: bool = False) -> sa.ColumnElement[int]:
    """The smallest queued seq at this priority; with none queued, the newest seq given out.

    `hinted` (PostgreSQL): the smallest queued seq from `head_hint` on, a head this process saw before
    (`HeadHints`; `NO_HINT` for none). Claimed jobs leave their entries in the claim index, dead, at the
    front of the queue's order until a VACUUM, and a look from the priority's start steps over all of them
    (0.33 ms once 96,000 jobs had been claimed); from the hint it goes down to the head. Jobs join the queue
    at or after the head, so the head is before the hint only for a job put back at its old place (a
    retry, an expired lease), or one another API process placed at the head while this one looked (off by
    a seq or so): such a job is not seen as the head until the next look from the start, and a tenant
    arriving meanwhile is placed at the smallest queued seq after the hint (or the newest given), still
    ahead of everything else queued. With nothing queued at this priority from the hint on, the look goes
    on through the next priorities' entries, dead ones included, to the first queued job."""
    newest_given = sa.select(sa.func.max(lanes.c.last_seq)).where(lanes.c.priority == priority).scalar_subquery()
    if not hinted:
        smallest_queued = (
            sa.select(sa.func.min(jobs.c.fair_seq))
            .where(jobs.c.status == QUEUED, jobs.c.priority == priority)
            .scalar_subquery()
        )
        return sa.func.coalesce(smallest_queued, newest_given, 0)
    return sa.func.coalesce(first_queued_from(priority), newest_given, 0)


def first_queued_from(priority: sa.ColumnElement[int]) -> Any:
    """The smallest queued seq at `priority` from `head_hint` on; NULL when the first queued job from there
    is of a lower priority, or none is. Written as one row comparison that starts with `status` and no
    other condition on these columns: PostgreSQL drops `status = 'queued'` from a plain read of the claim
    index (its predicate implies it), and without a start on the index's first column, or with another
    condition on `priority` beside the comparison, the scan starts at the index's first entry."""
    since = sa.bindparam("head_hint", type_=sa.BigInteger)
    place = sa.tuple_(QUEUED, priority, since)
    return (
        sa.select(sa.case((jobs.c.priority == priority, jobs.c.fair_seq)))
        .where(jobs.c.status == QUEUED, sa.tuple_(jobs.c.status, jobs.c.priority, jobs.c.fair_seq) >= place)
        .order_by(jobs.c.status, jobs.c.priority, jobs.c.fair_seq)
        .limit(1)
        .scalar_subquery()
    )


@functools.cache
def lane_upsert(dialect: str) -> sa.Insert:
    """k jobs joining a lane whose last seq is `old` take the seqs up to `max(old, head - 1) + k`; the
    statement returns that new last seq, and on PostgreSQL the next `head_hint` (see `queue_head`): the
    head it found queued, or with none queued the first seq it gave. Its row lock also keeps two API
    processes from handing out the same seqs on PostgreSQL. Parameters `tenant`, `priority`, `count` (and
    `head_hint` on PostgreSQL). Built once per dialect: building and cache-keying it per batch would cost a
    sixth of a submission batch's CPU (docs/benchmarks.md)."""
    on_postgresql = dialect == "postgresql"
    insert = (postgresql.insert if on_postgresql else sqlite.insert)(lanes)
    greatest = sa.func.greatest if on_postgresql else sa.func.max
    priority = sa.bindparam("priority", type_=sa.Integer)
    count = sa.bindparam("count", type_=sa.BigInteger)
    head = queue_head(priority, hinted=on_postgresql)
    upsert = insert.values(
        tenant=sa.bindparam("tenant", type_=sa.String), priority=priority, last_seq=head - 1 + count
    ).on_conflict_do_update(
        index_elements=[lanes.c.tenant, lanes.c.priority],
        set_={"last_seq": greatest(lanes.c.last_seq, head - 1) + count},
    )
    if not on_postgresql:
        return upsert.returning(lanes.c.last_seq)
    # Looked for again (the statement's third look, after the insert's and the update's), after the lane's
    # update and before the batch's jobs are inserted: from the hint, down to the head.
    return upsert.returning(
        lanes.c.last_seq, sa.func.coalesce(first_queued_from(priority), lanes.c.last_seq - count + 1)
    )


def lane_params(tenant: str, priority: int, count: int, head_hint: int = NO_HINT) -> dict[str, Any]:
    return {"tenant": tenant, "priority": priority, "count": count, "head_hint": head_hint}


def place(batch: Sequence[Job], lasts: Mapping[tuple[str, int], int]) -> list[Job]:
    """The batch with fair seqs, given each lane's new last seq."""
    next_seq = {key: last - count + 1 for key, count in lane_counts(batch).items() for last in [lasts[key]]}
    placed = []
    for job in batch:
        key = (job.tenant, job.priority)
        placed.append(replace(job, fair_seq=next_seq[key]))
        next_seq[key] += 1
    return placed
