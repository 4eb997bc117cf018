"""The job store's hot statements, built once (with bind parameters) rather than per call: building one
and computing its cache key costs ~100 µs of CPU per execution, twice what SQLite then spends on it
(docs/benchmarks.md). `store.JobStore` runs them; its module doc states the locking rules they follow."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY as postgresql_array

from inferline.jobs.model import Job, JobStatus
from inferline.schema import UTCDateTime, jobs

# Statuses written into the SQL, not bound: PostgreSQL matches a query to a partial index (`WHERE status =
# 'queued'`, migration 0011) only when the query names the same constant, which a generic plan's
# parameter is not.
QUEUED: sa.ColumnClause[str] = sa.literal_column(f"'{JobStatus.QUEUED.value}'")
RUNNING: sa.ColumnClause[str] = sa.literal_column(f"'{JobStatus.RUNNING.value}'")
NOW = sa.bindparam("now", type_=UTCDateTime())


@functools.cache
def running_update(columns: tuple[str, ...]) -> sa.Update:
    """Set `columns` of job `_id` if `_owner` still holds it running."""
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("_id"),
            jobs.c.lease_owner == sa.bindparam("_owner"),
            jobs.c.status == RUNNING,
        )
        .values({column: sa.bindparam(column) for column in columns})
    )


def finish_groups(rows: list[tuple[Job, dict[str, Any]]], now: datetime) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The ends of attempts by the set of columns they write (each group in id order)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    sorted_columns: dict[tuple[str, ...], tuple[str, ...]] = {}  # the ends of one kind list their columns alike
    for job, values in sorted(rows, key=lambda row: row[0].id):
        assert values["updated_at"] == now and values["lease_owner"] is None
        columns = tuple(values)
        group = sorted_columns.get(columns)
        if group is None:
            group = sorted_columns[columns] = tuple(sorted(columns))
        groups.setdefault(group, []).append({"_id": job.id, **values})
    return groups


def runs_within(sizes: Sequence[int], budget: int) -> list[range]:
    """The items (by their `sizes`) in consecutive runs whose sizes add up to at most `budget`; an item over
    it runs alone."""
    runs: list[range] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and total + size > budget:
            runs.append(range(start, index))
            start, total = index, 0
        total += size
    runs.append(range(start, len(sizes)))
    return runs


def json_text(value: Any) -> str:
    """A JSON column's value as the JSON type binds it (None is JSON null, as `none_as_null` is off)."""
    return json.dumps(value)


def pg_array_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return "text[]"  # cast to jsonb per element below
    if isinstance(kind, UTCDateTime):
        return "timestamptz[]"
    if isinstance(kind, sa.Float):
        return "float8[]"
    if isinstance(kind, sa.BigInteger):
        return "int8[]"
    if isinstance(kind, sa.Integer):  # SmallInteger too
        return "int4[]"
    if isinstance(kind, sa.Boolean):
        return "bool[]"
    return "text[]"


@functools.cache
def finish_group_statement(varying: tuple[str, ...], shared: tuple[str, ...]) -> sa.TextClause:
    """PostgreSQL: the values of the rows (`unnest(ids, varying columns…)`) that `_owner` still holds, each
    row locked in id order, as every writer of several job rows that waits does (module doc), then updated
    by primary key; RETURNING the ids that applied. A fixed text per set of columns, so it is planned once.

    Its shape does not depend on the planner's estimates, which are wrong here: statistics taken while
    few jobs ran say one job runs, and any join the planner may order (the rows locked with the values, a
    scan of `jobs` for the owner with the values) became a nested loop that reads every running job, or
    every value, again for each row: 17-20 ms per finish of 64 with 128 running, against ~4 ms. A LATERAL
    lookup can only run inside the loop over the values, by primary key; `held` names no status because
    `lease_owner` is set only while a job runs (the claim sets both, every end clears it), and
    `status = 'running'` would offer the partial index over running jobs."""
    sets = [f'"{c}" = :s_{c}' for c in shared]
    sets += [f'"{c}" = v."{c}"::jsonb' if isinstance(jobs.c[c].type, sa.JSON) else f'"{c}" = v."{c}"' for c in varying]
    arrays = ", ".join(["CAST(:_ids AS text[])", *(f"CAST(:v_{c} AS {pg_array_type(jobs.c[c])})" for c in varying)])
    names = ", ".join(["_id", *(f'"{c}"' for c in varying)])
    statement = sa.text(
        # Column names come from the schema, values are all bound. Ordered as `jobs.id` is (COLLATE "C",
        # migration 0020), so these rows are locked in the order every other writer locks them.
        f"WITH v AS MATERIALIZED (SELECT v.* FROM (SELECT * FROM unnest({arrays}) AS u({names}) "  # noqa: S608
        f'ORDER BY _id COLLATE "C") AS v '
        f"CROSS JOIN LATERAL (SELECT jobs.id FROM jobs WHERE jobs.id = v._id AND jobs.lease_owner = :_owner "
        f"FOR UPDATE) AS held) "
        f"UPDATE jobs SET {', '.join(sets)} FROM v WHERE jobs.id = v._id RETURNING jobs.id"
    )
    return statement.bindparams(*(sa.bindparam(f"s_{c}", type_=jobs.c[c].type) for c in shared))


@functools.cache
def finished_rows() -> sa.Select[Any]:
    return sa.select(jobs.c.id).where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.updated_at == NOW,
        jobs.c.lease_owner.is_(None),
    )


def id_among_ids(on_postgresql: bool) -> sa.ColumnElement[bool]:
    """`id` is one of the list `ids`. On PostgreSQL `id = ANY(:ids)` with one array parameter: the text
    stays the same whatever the list's length, so the server plans it once (an IN list of each length is
    a statement of its own, planned anew). SQLite has no arrays: an IN list there."""
    if on_postgresql:
        return jobs.c.id == sa.any_(sa.bindparam("ids", type_=postgresql_array(sa.String())))
    return jobs.c.id.in_(sa.bindparam("ids", expanding=True))


@functools.cache
def lock_rows(on_postgresql: bool) -> sa.Select[Any]:
    """Rows locked after the sort, so in id order (PostgreSQL; SQLite compiles FOR UPDATE to nothing: its
    one writer already serializes these transactions)."""
    return (
        sa.select(jobs.c.id, jobs.c.cancel_requested)
        .where(id_among_ids(on_postgresql))
        .order_by(jobs.c.id)
        .with_for_update()
    )


def held_by_owner(on_postgresql: bool) -> sa.ColumnElement[bool]:
    return sa.and_(
        id_among_ids(on_postgresql),
        jobs.c.lease_owner == sa.bindparam("owner"),
        jobs.c.status == RUNNING,
    )


@functools.cache
def renew_leases(on_postgresql: bool) -> sa.Update:
    """The leases `owner` holds among `ids` and no other transaction is writing, renewed without waiting."""
    free = (
        sa.select(jobs.c.id).where(held_by_owner(on_postgresql)).order_by(jobs.c.id).with_for_update(skip_locked=True)
    )
    return (
        jobs.update()
        .where(jobs.c.id.in_(free.scalar_subquery()))
        .values(lease_expires_at=sa.bindparam("expires"))
        .returning(jobs.c.id, jobs.c.cancel_requested, jobs.c.deadline_at)
    )


@functools.cache
def held_leases(on_postgresql: bool) -> sa.Select[Any]:
    """The jobs `owner` holds among `ids`, as last committed (a plain read never waits for a lock)."""
    return sa.select(jobs.c.id, jobs.c.cancel_requested, jobs.c.deadline_at).where(held_by_owner(on_postgresql))


@functools.cache
def claim_candidates(kinds: tuple[str, ...], from_place: bool = False) -> sa.Select[Any]:
    """The first `limit` runnable jobs of `kinds` in fair order (parameters `now`, `limit`); `from_place`:
    only those at or after the place (`from_priority`, `from_seq`) in that order, which the claim index
    reaches in one descent (`ClaimStart`). SQLite compiles FOR UPDATE SKIP LOCKED to nothing: its one
    writer already serializes claims."""
    where = [jobs.c.status == QUEUED, jobs.c.run_after <= NOW, jobs.c.kind.in_(kinds)]
    if from_place:
        place = sa.tuple_(
            sa.bindparam("from_priority", type_=sa.Integer()), sa.bindparam("from_seq", type_=sa.BigInteger())
        )
        where.insert(1, sa.tuple_(jobs.c.priority, jobs.c.fair_seq) >= place)
    return (
        sa.select(jobs.c.id, jobs.c.kind)
        .where(*where)
        .order_by(jobs.c.priority, jobs.c.fair_seq, jobs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def claim_update(kinds: tuple[str, ...] | None, on_postgresql: bool, from_place: bool = False) -> sa.Update:
    """Lease the candidates of `kinds` to `owner` until `expires` (from a place in the queue: see
    `claim_candidates`); with `kinds` None, the jobs `ids`.

    On PostgreSQL the statement also sets the transaction's `synchronous_commit` to off (see
    `commit_without_waiting_for_disk`), which a separate `SET LOCAL` would cost a round trip: an
    uncorrelated scalar subquery on a CTE, run once before the update, whatever the number of rows."""
    if kinds is None:
        update = jobs.update().where(id_among_ids(on_postgresql))
    else:
        chosen = sa.select(claim_candidates(kinds, from_place).subquery().c.id).scalar_subquery()
        update = jobs.update().where(jobs.c.id.in_(chosen))
    if on_postgresql:
        setting = sa.select(sa.func.set_config("synchronous_commit", "off", sa.true()).label("value"))
        async_commit = setting.cte("async_commit")
        update = update.add_cte(async_commit).where(sa.select(async_commit.c.value).scalar_subquery().is_not(None))
    return update.values(
        status=JobStatus.RUNNING.value,
        attempts=jobs.c.attempts + 1,
        lease_owner=sa.bindparam("owner"),
        lease_expires_at=sa.bindparam("expires"),
        started_at=sa.func.coalesce(jobs.c.started_at, NOW),
        updated_at=NOW,
    ).returning(*jobs.columns)


def within_slots(rows: Iterable[Any], slots: Mapping[str, int]) -> list[str]:
    """Keep claimed rows within each limited kind's free slots; rows dropped here stay queued."""
    left = dict(slots)
    ids = []
    for job_id, kind in rows:
        if kind in left:
            if left[kind] <= 0:
                continue
            left[kind] -= 1
        ids.append(job_id)
    return ids
