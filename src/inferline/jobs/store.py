"""SQL for jobs: the job table is the queue. Stores never commit; use cases own the transaction.

Row locks on PostgreSQL: a transaction that writes several job rows takes their locks in id order, waiting
(outcomes, progress), or takes only those free and never waits (claims, lease renewals, the reaper). Two
transactions can then never each hold a row the other waits for: a worker's renewal, its progress write and
its outcome write run at once on separate connections, over the same rows.

Every write that changes a job's status (or asks a running job to stop) also writes its event to the
outbox, in the same transaction, when the engine has events on (`events/outbox.py`): one outbox row per
call, whatever its number of jobs, so a claim or a batch of outcomes costs one more single-row insert.

Fairness is start-time fair queuing. Each job gets a `fair_seq` at submission:
`max(tenant's last seq + 1, head of the queue)`, where the head is the smallest queued seq at that
priority (or the newest seq given out when the queue is empty). Claims then read the queue in
(priority, fair_seq, id) order, which is one index scan, and tenants alternate: a tenant arriving
behind another's 10,000 jobs gets the seq at the head and runs next.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY as postgresql_array
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import paging
from inferline.events import outbox
from inferline.jobs import mysql
from inferline.jobs.model import Job, JobStatus
from inferline.schema import UTCDateTime, jobs, lanes

_JOB_FIELDS = {c.name for c in jobs.columns}
_JOB_DATACLASS_FIELDS = frozenset(field.name for field in fields(Job))
assert _JOB_FIELDS == _JOB_DATACLASS_FIELDS, "a Job field and the jobs table's columns must match"
_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit TO OFF")
# Statuses written into the SQL, not bound: PostgreSQL matches a query to a partial index (`WHERE status =
# 'queued'`, migration 0011) only when the query names the same constant, which a generic plan's
# parameter is not.
_QUEUED: sa.ColumnClause[str] = sa.literal_column(f"'{JobStatus.QUEUED.value}'")
_RUNNING: sa.ColumnClause[str] = sa.literal_column(f"'{JobStatus.RUNNING.value}'")
# Any value serves: it only names the lock all claimers of concurrency-limited kinds share.
_KIND_LIMIT_LOCK = 0x1F4E_0001


def job_from_row(row: Mapping[Any, Any]) -> Job:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    values["webhook_events"] = values.get("webhook_events") or []
    if values.keys() != _JOB_DATACLASS_FIELDS:  # a partial row: the constructor fills the defaults
        return Job(**values)
    # A whole row (every claim reads 64): the frozen dataclass's __init__ sets its 31 fields one
    # object.__setattr__ at a time, ~3x the cost of filling its __dict__, which leaves the same object.
    job = object.__new__(Job)
    job.__dict__.update(values)
    return job


def job_values(job: Job) -> dict[str, Any]:
    values = {name: getattr(job, name) for name in _JOB_FIELDS}
    values["status"] = job.status.value
    return values


def lane_counts(batch: Sequence[Job]) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for job in batch:
        counts[(job.tenant, job.priority)] = counts.get((job.tenant, job.priority), 0) + 1
    return dict(sorted(counts.items()))  # a fixed order: concurrent batches lock lanes alike


def queue_head(priority: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """The smallest queued seq at this priority; with none queued, the newest seq given out."""
    smallest_queued = (
        sa.select(sa.func.min(jobs.c.fair_seq))
        .where(jobs.c.status == _QUEUED, jobs.c.priority == priority)
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


def add_jobs_sync(conn: sa.Connection, batch: Sequence[Job]) -> list[Job]:
    """`JobStore.add` for SQLite's one-hop writer thread (db.SqliteWriter): the same statements, run
    synchronously."""
    lasts = {
        key: int(conn.execute(lane_upsert("sqlite"), lane_params(*key, count)).scalar_one())
        for key, count in lane_counts(batch).items()
    }
    placed = place(batch, lasts)
    conn.execute(jobs.insert(), [job_values(job) for job in placed])
    if outbox.enabled(conn):
        outbox.add_sync(conn, outbox.job_events(("job.queued", job, None) for job in placed))
    return placed


def change_event(before: JobStatus, job: Job) -> str | None:
    """The event of a job written as `job` over a row in status `before`; None when its status did not
    change and no running job was asked to stop."""
    if job.status is not before:
        return f"job.{job.status.value}"
    return "job.cancel_requested" if job.cancel_requested and job.status is JobStatus.RUNNING else None


def _ended_event(values: Mapping[str, Any]) -> str:
    """The event of an attempt's end written with `values`: back in the queue after a failed attempt
    (`retrying`) or a shutdown (`released`), else the final status."""
    status = str(values["status"])
    if status == JobStatus.QUEUED.value:
        return "job.retrying" if "error" in values else "job.released"
    return f"job.{status}"


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns about one of its jobs."""

    job_id: str
    cancel_requested: bool
    deadline_at: datetime | None


class JobStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.events = outbox.enabled(conn)

    async def _record(self, changes: Iterable[tuple[str | None, Job, Mapping[str, Any] | None]]) -> None:
        """The events of these changes (`(type, job as read, values written over it)`; a None type is
        skipped) in one outbox row, when events are on."""
        if self.events:
            lines = outbox.job_events((t, job, values) for t, job, values in changes if t is not None)
            if lines:
                await outbox.add(self.conn, lines)

    # -- submission ---------------------------------------------------------------------------

    async def add(self, batch: Sequence[Job]) -> list[Job]:
        """Insert jobs (one executemany) with their fair sequence numbers."""
        placed = await self._place_in_lanes(batch)
        await self.conn.execute(jobs.insert(), [job_values(job) for job in placed])
        await self._record(("job.queued", job, None) for job in placed)
        if self.dialect == "postgresql":
            for kind in sorted({job.kind for job in placed}):
                await self.conn.execute(sa.select(sa.func.pg_notify("inferline_jobs", kind)))
        return placed

    async def requeue(self, job: Job) -> Job:
        """Put a failed job back in line, as if it were submitted now."""
        [job] = await self._place_in_lanes([job])
        await self.conn.execute(jobs.update().where(jobs.c.id == job.id).values(**job_values(job)))
        await self._record([("job.requeued", job, None)])
        return job

    async def _place_in_lanes(self, batch: Sequence[Job]) -> list[Job]:
        """Give each job `max(its lane's last seq + 1, head of its priority)`, see `lane_upsert`."""
        if self.dialect == "mysql":
            head = sa.select(queue_head(sa.bindparam("priority", type_=sa.Integer)))
            return place(batch, await mysql.place_in_lanes(self.conn, lane_counts(batch), head))
        lasts = {}
        for (tenant, priority), count in lane_counts(batch).items():
            result = await self.conn.execute(lane_upsert(self.dialect), lane_params(tenant, priority, count))
            lasts[(tenant, priority)] = int(result.scalar_one())
        return place(batch, lasts)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, job_id: str, *, tenant: str | None = None, lock: bool = False) -> Job | None:
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if lock:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        return None if row is None else job_from_row(row)

    async def get_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        query = sa.select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key == key)
        row = (await self.conn.execute(query)).mappings().first()
        return None if row is None else job_from_row(row)

    async def get_many(self, job_ids: Sequence[str], *, tenant: str) -> list[Job]:
        query = sa.select(jobs).where(jobs.c.tenant == tenant, jobs.c.id.in_(job_ids))
        return [job_from_row(row) for row in (await self.conn.execute(query)).mappings()]

    async def by_key_prefix(self, tenant: str, prefix: str, *, unfinished: bool = False) -> list[Job]:
        """The jobs whose idempotency key starts with `prefix`, in id order; `unfinished`: only queued and
        running ones, with their rows locked (in id order)."""
        query = sa.select(jobs).where(
            jobs.c.tenant == tenant, jobs.c.idempotency_key.startswith(prefix, autoescape=True)
        )
        if unfinished:
            query = query.where(jobs.c.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value))).with_for_update()
        rows = (await self.conn.execute(query.order_by(jobs.c.id))).mappings()
        # SQLite's LIKE ignores case: the exact prefix is checked here.
        return [job_from_row(row) for row in rows if row["idempotency_key"].startswith(prefix)]

    async def page(
        self, *, tenant: str, status: JobStatus | None, kind: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """Newest first. The cursor is the last id of the previous page (ids are time-ordered)."""
        query = sa.select(jobs).where(jobs.c.tenant == tenant)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        return await paging.newest_first(
            self.conn, query, jobs.c.id, limit=limit, cursor=cursor, to_item=job_from_row, id_of=lambda job: job.id
        )

    async def queue_depth(self) -> list[tuple[str, int, int]]:
        query = (
            sa.select(jobs.c.kind, jobs.c.priority, sa.func.count())
            .where(jobs.c.status == _QUEUED)
            .group_by(jobs.c.kind, jobs.c.priority)
        )
        return [(row[0], int(row[1]), int(row[2])) for row in await self.conn.execute(query)]

    # -- writes guarded by state --------------------------------------------------------------

    async def save(self, job: Job, *, expect_status: JobStatus, expect_owner: str | None = None) -> bool:
        """Write the job if it is still in the state the caller read; False if someone moved it."""
        query = jobs.update().where(jobs.c.id == job.id, jobs.c.status == expect_status.value)
        if expect_owner is not None:
            query = query.where(jobs.c.lease_owner == expect_owner)
        values = job_values(job)
        del values["id"]
        result = await self.conn.execute(query.values(**values))
        if result.rowcount:
            await self._record([(change_event(expect_status, job), job, None)])
        return bool(result.rowcount)

    async def lock_rows(self, job_ids: Iterable[str]) -> dict[str, bool]:
        """Lock the rows of `job_ids` in id order, waiting for each, before a batched write that cannot
        order its own updates; returns each row's `cancel_requested` (rows that are gone are left out)."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        return {
            row[0]: bool(row[1])
            for row in await self.conn.execute(_lock_rows(self.dialect == "postgresql"), {"ids": ids})
        }

    async def update_running(self, job_id: str, owner: str, values: dict[str, Any]) -> bool:
        """Set `values` of a running job `owner` holds (its progress, its checkpoint): no status change."""
        update = _running_update(tuple(sorted(values)))
        if self.dialect == "mysql":
            await self.lock_rows([job_id])  # see mysql.py: the row's primary key first
        return bool((await self.conn.execute(update, {"_id": job_id, "_owner": owner, **values})).rowcount)

    async def end_expired(self, job: Job, values: dict[str, Any]) -> bool:
        """Write what follows a lease that expired (`values`: the job back in the queue, failed or
        canceled) if its dead owner still holds it; back in the queue is the event `job.lease_expired`."""
        if not await self.update_running(job.id, job.lease_owner or "", values):
            return False
        event = "job.lease_expired" if values["status"] == JobStatus.QUEUED.value else _ended_event(values)
        await self._record([(event, job, values)])
        return True

    # -- the queue ----------------------------------------------------------------------------

    async def claim(
        self,
        *,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        now: datetime,
        lease_s: float,
        kind_limits: Mapping[str, int],
    ) -> list[Job]:
        slots = await self._free_slots(kind_limits, kinds)
        allowed = [kind for kind in kinds if slots.get(kind, 1) > 0]
        if not allowed or limit <= 0:
            return []
        params = {"now": now, "limit": limit, "owner": owner, "expires": now + timedelta(seconds=lease_s)}
        chosen: list[str] = []
        if slots:  # limited kinds: pick in Python, within each kind's free slots
            candidates = await self.conn.execute(_claim_candidates(tuple(allowed)), params)
            chosen = _within_slots(candidates, slots)
            if not chosen:
                return []
            update = _claim_update(None, self.dialect == "postgresql")
            params["ids"] = chosen
        else:  # the common case: select and update in one statement, one round trip
            update = _claim_update(tuple(allowed), self.dialect == "postgresql")
        rows: Sequence[Mapping[Any, Any]]
        if self.dialect == "mysql":
            rows = await mysql.claim(self.conn, kinds=None if slots else allowed, ids=chosen, params=params)
        else:
            rows = list((await self.conn.execute(update, params)).mappings())
        claimed = [job_from_row(row) for row in rows]
        claimed.sort(key=lambda job: (job.priority, job.fair_seq, job.id))
        await self._record(("job.running", job, None) for job in claimed)
        return claimed

    async def commit_without_waiting_for_disk(self) -> None:
        """This transaction's commit returns before its WAL reaches the disk (PostgreSQL). For claims and
        lease renewals only: a crash of the database server may forget the last ones, which puts those
        jobs back in the queue or lets their leases expire, as a crashed worker would; delivery is
        at-least-once anyway. Outcomes, submissions and checkpoints keep waiting for the disk."""
        if self.dialect == "postgresql":
            await self.conn.execute(_ASYNC_COMMIT)

    async def finish_running(
        self, owner: str, rows: list[tuple[Job, dict[str, Any]]], now: datetime, *, locked: bool = False
    ) -> set[str]:
        """Write the ends of many attempts (each job as claimed, and the column values of its end), grouped
        into one executemany per set of columns; their events take one more row.

        Every such write sets `updated_at=now` and clears the lease, which is how the rows that
        applied are told from those whose lease was lost (executemany gives no per-row count). Each
        executemany runs in id order; several groups together do not, so on PostgreSQL their rows are
        locked in id order first (on MariaDB always, see mysql.py), unless the caller did (`locked`, see
        `lock_rows`)."""
        groups = finish_groups(rows, now)
        must_lock = (len(groups) > 1 and self.dialect == "postgresql") or self.dialect == "mysql"
        if must_lock and not locked:
            await self.lock_rows(job.id for job, _ in rows)
        if self.dialect == "postgresql":
            applied: set[str] = set()
            for columns, params in groups.items():
                applied.update(await self._finish_group_pg(owner, columns, params))
        else:
            for columns, params in groups.items():
                await self.conn.execute(_running_update(columns), [p | {"_owner": owner} for p in params])
            result = await self.conn.execute(_finished_rows(), {"ids": [job.id for job, _ in rows], "now": now})
            applied = {row[0] for row in result}
        await self._record((_ended_event(values), job, values) for job, values in rows if job.id in applied)
        return applied

    async def _finish_group_pg(self, owner: str, columns: tuple[str, ...], params: list[dict[str, Any]]) -> set[str]:
        """One `UPDATE … FROM unnest(…)` for a group's rows (in id order): the values that differ between
        rows go in as arrays, those all rows share as single parameters; the rows that applied come back."""
        first = params[0]
        varying = tuple(c for c in columns if any(p[c] != first[c] for p in params))
        shared = tuple(c for c in columns if c not in varying)
        binds: dict[str, Any] = {"_owner": owner, "_ids": [p["_id"] for p in params]}
        for column in shared:
            binds[f"s_{column}"] = first[column]
        for column in varying:
            as_json = isinstance(jobs.c[column].type, sa.JSON)
            binds[f"v_{column}"] = [_json_text(p[column]) if as_json else p[column] for p in params]
        result = await self.conn.execute(_finish_group_statement(varying, shared), binds)
        return {row[0] for row in result}

    async def _free_slots(self, kind_limits: Mapping[str, int], kinds: Sequence[str]) -> dict[str, int]:
        limited = [kind for kind in kinds if kind in kind_limits]
        if not limited:
            return {}
        if self.dialect == "postgresql":
            # Counting then claiming must be atomic across workers, or two could both see a free slot.
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_KIND_LIMIT_LOCK)))
        elif self.dialect == "mysql":
            await mysql.lock_kind_limits(self.conn)
        query = (
            sa.select(jobs.c.kind, sa.func.count())
            .where(jobs.c.status == _RUNNING, jobs.c.kind.in_(limited))
            .group_by(jobs.c.kind)
        )
        running = {row[0]: int(row[1]) for row in await self.conn.execute(query)}
        return {kind: kind_limits[kind] - running.get(kind, 0) for kind in limited}

    async def renew_leases(
        self, *, owner: str, job_ids: Iterable[str], now: datetime, lease_s: float
    ) -> list[LeaseState]:
        """Renew the leases `owner` still holds among `job_ids`; returns the state of each job it holds. A
        row another transaction is writing (the job's outcome, its progress) is not waited for: its lease
        is not renewed this time, and its state is read as last committed."""
        ids = sorted(set(job_ids))
        if not ids:
            return []
        params = {"ids": ids, "owner": owner, "expires": now + timedelta(seconds=lease_s)}
        if self.dialect == "mysql":
            rows = await mysql.renew_leases(self.conn, _held_by_owner(False), params)
        else:
            rows = list((await self.conn.execute(_renew_leases(self.dialect == "postgresql"), params)).mappings())
        renewed = {row["id"] for row in rows}
        if len(renewed) < len(ids):  # skipped while locked, or no longer held
            skipped = [job_id for job_id in ids if job_id not in renewed]
            rows += (
                await self.conn.execute(_held_leases(self.dialect == "postgresql"), {"ids": skipped, "owner": owner})
            ).mappings()
        return [LeaseState(row["id"], bool(row["cancel_requested"]), row["deadline_at"]) for row in rows]

    async def expired_leases(self, now: datetime, limit: int = 100) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.status == _RUNNING, jobs.c.lease_expires_at < now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [job_from_row(row) for row in (await self.conn.execute(query)).mappings()]

    async def overdue_queued(self, now: datetime, limit: int = 100) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.status == _QUEUED, jobs.c.deadline_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [job_from_row(row) for row in (await self.conn.execute(query)).mappings()]


def _within_slots(rows: Iterable[Any], slots: Mapping[str, int]) -> list[str]:
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


# Hot statements are built once (with bind parameters) rather than per call: building one and computing
# its cache key costs ~100 µs of CPU per execution, twice what SQLite then spends on it (docs/benchmarks.md).

_NOW = sa.bindparam("now", type_=UTCDateTime())


@functools.cache
def _running_update(columns: tuple[str, ...]) -> sa.Update:
    """Set `columns` of job `_id` if `_owner` still holds it running."""
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("_id"),
            jobs.c.lease_owner == sa.bindparam("_owner"),
            jobs.c.status == _RUNNING,
        )
        .values({column: sa.bindparam(column) for column in columns})
    )


def finish_groups(rows: list[tuple[Job, dict[str, Any]]], now: datetime) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The ends of attempts by the set of columns they write (each group in id order)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job, values in sorted(rows, key=lambda row: row[0].id):
        assert values["updated_at"] == now and values["lease_owner"] is None
        groups.setdefault(tuple(sorted(values)), []).append({"_id": job.id, **values})
    return groups


def _json_text(value: Any) -> str:
    """A JSON column's value as the JSON type binds it (None is JSON null, as `none_as_null` is off)."""
    return json.dumps(value)


def _pg_array_type(column: sa.Column[Any]) -> str:
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
def _finish_group_statement(varying: tuple[str, ...], shared: tuple[str, ...]) -> sa.TextClause:
    """PostgreSQL: `UPDATE jobs … FROM unnest(ids, varying columns…)` where `_owner` still holds each job
    running; RETURNING the ids that applied. A fixed text per set of columns, so it is planned once. The
    rows are locked first in id order (ORDER BY under FOR UPDATE locks as it sorts), as every writer of
    several job rows that waits does (module doc): the join's own order depends on the plan."""
    running = JobStatus.RUNNING.value
    sets = [f'"{c}" = :s_{c}' for c in shared]
    sets += [f'"{c}" = v."{c}"::jsonb' if isinstance(jobs.c[c].type, sa.JSON) else f'"{c}" = v."{c}"' for c in varying]
    arrays = ", ".join(["CAST(:_ids AS text[])", *(f"CAST(:v_{c} AS {_pg_array_type(jobs.c[c])})" for c in varying)])
    names = ", ".join(["_id", *(f'"{c}"' for c in varying)])
    held = f"jobs.lease_owner = :_owner AND jobs.status = '{running}'"
    statement = sa.text(
        # Column names come from the schema, values are all bound.
        f"WITH locked AS (SELECT jobs.id FROM jobs WHERE jobs.id = ANY(CAST(:_ids AS text[])) AND {held} "  # noqa: S608
        f"ORDER BY jobs.id FOR UPDATE) "
        f"UPDATE jobs SET {', '.join(sets)} FROM unnest({arrays}) AS v({names}) "
        f"WHERE jobs.id = v._id AND jobs.id IN (SELECT id FROM locked) AND {held} RETURNING jobs.id"
    )
    return statement.bindparams(*(sa.bindparam(f"s_{c}", type_=jobs.c[c].type) for c in shared))


@functools.cache
def _finished_rows() -> sa.Select[Any]:
    return sa.select(jobs.c.id).where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.updated_at == _NOW,
        jobs.c.lease_owner.is_(None),
    )


def _id_among_ids(on_postgresql: bool) -> sa.ColumnElement[bool]:
    """`id` is one of the list `ids`. On PostgreSQL `id = ANY(:ids)` with one array parameter: the text
    stays the same whatever the list's length, so the server plans it once (an IN list of each length is
    a statement of its own, planned anew). SQLite has no arrays: an IN list there."""
    if on_postgresql:
        return jobs.c.id == sa.any_(sa.bindparam("ids", type_=postgresql_array(sa.String())))
    return jobs.c.id.in_(sa.bindparam("ids", expanding=True))


@functools.cache
def _lock_rows(on_postgresql: bool) -> sa.Select[Any]:
    """Rows locked after the sort, so in id order (PostgreSQL; SQLite compiles FOR UPDATE to nothing: its
    one writer already serializes these transactions)."""
    return (
        sa.select(jobs.c.id, jobs.c.cancel_requested)
        .where(_id_among_ids(on_postgresql))
        .order_by(jobs.c.id)
        .with_for_update()
    )


def _held_by_owner(on_postgresql: bool) -> sa.ColumnElement[bool]:
    return sa.and_(
        _id_among_ids(on_postgresql),
        jobs.c.lease_owner == sa.bindparam("owner"),
        jobs.c.status == _RUNNING,
    )


@functools.cache
def _renew_leases(on_postgresql: bool) -> sa.Update:
    """The leases `owner` holds among `ids` and no other transaction is writing, renewed without waiting."""
    free = (
        sa.select(jobs.c.id).where(_held_by_owner(on_postgresql)).order_by(jobs.c.id).with_for_update(skip_locked=True)
    )
    return (
        jobs.update()
        .where(jobs.c.id.in_(free.scalar_subquery()))
        .values(lease_expires_at=sa.bindparam("expires"))
        .returning(jobs.c.id, jobs.c.cancel_requested, jobs.c.deadline_at)
    )


@functools.cache
def _held_leases(on_postgresql: bool) -> sa.Select[Any]:
    """The jobs `owner` holds among `ids`, as last committed (a plain read never waits for a lock)."""
    return sa.select(jobs.c.id, jobs.c.cancel_requested, jobs.c.deadline_at).where(_held_by_owner(on_postgresql))


@functools.cache
def _claim_candidates(kinds: tuple[str, ...]) -> sa.Select[Any]:
    """The first `limit` runnable jobs of `kinds` in fair order (parameters `now`, `limit`). SQLite
    compiles FOR UPDATE SKIP LOCKED to nothing: its one writer already serializes claims."""
    return (
        sa.select(jobs.c.id, jobs.c.kind)
        .where(jobs.c.status == _QUEUED, jobs.c.run_after <= _NOW, jobs.c.kind.in_(kinds))
        .order_by(jobs.c.priority, jobs.c.fair_seq, jobs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _claim_update(kinds: tuple[str, ...] | None, on_postgresql: bool) -> sa.Update:
    """Lease the candidates of `kinds` to `owner` until `expires`; with `kinds` None, the jobs `ids`.

    On PostgreSQL the statement also sets the transaction's `synchronous_commit` to off (see
    `commit_without_waiting_for_disk`), which a separate `SET LOCAL` would cost a round trip: an
    uncorrelated scalar subquery on a CTE, run once before the update, whatever the number of rows."""
    if kinds is None:
        update = jobs.update().where(_id_among_ids(on_postgresql))
    else:
        chosen = sa.select(_claim_candidates(kinds).subquery().c.id).scalar_subquery()
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
        started_at=sa.func.coalesce(jobs.c.started_at, _NOW),
        updated_at=_NOW,
    ).returning(*jobs.columns)
