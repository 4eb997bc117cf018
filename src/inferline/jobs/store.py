"""SQL for jobs: the job table is the queue. Stores never commit; use cases own the transaction.

Row locks on PostgreSQL: a transaction that writes several job rows takes their locks in id order, waiting
(outcomes, progress), or takes only those free and never waits (claims, lease renewals, the reaper). Two
transactions can then never each hold a row the other waits for: a worker's renewal, its progress write and
its outcome write run at once on separate connections, over the same rows.

Every write that changes a job's status (or asks a running job to stop) also writes its event to the
outbox, in the same transaction, when the engine has events on (`events/outbox.py`): one outbox row per
call, whatever its number of jobs, so a claim or a batch of outcomes costs one more single-row insert.
"""

from __future__ import annotations

import contextlib
import sqlite3
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import paging
from inferline.events import outbox
from inferline.jobs import mysql, wakeup
from inferline.jobs import statements as sql
from inferline.jobs.lanes import NO_HINT, HeadHints, lane_counts, lane_params, lane_upsert, place, queue_head
from inferline.jobs.model import Job, JobStatus
from inferline.schema import jobs

_JOB_FIELDS = {c.name for c in jobs.columns}
# Per database (engine) and priority, the head of the queue this process last saw (`lanes.queue_head`).
_HEADS_SEEN: weakref.WeakKeyDictionary[sa.Engine, HeadHints] = weakref.WeakKeyDictionary()
_JOB_DATACLASS_FIELDS = frozenset(field.name for field in fields(Job))
assert _JOB_FIELDS == _JOB_DATACLASS_FIELDS, "a Job field and the jobs table's columns must match"
_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit TO OFF")
# Built once: `sa.func.pg_notify(...)` made per submission was ~3% of a submission's CPU (its construction
# and cache key), for a statement whose text never changes.
_NOTIFY = sa.select(sa.func.pg_notify(wakeup.CHANNEL, sa.bindparam("kind", type_=sa.String)))
# PostgreSQL parses a JSON array into one allocation of at most 1 GiB, room for 2^24 elements: 2^24 + 1 ones
# (50 MB of text) fail ("invalid memory alloc request size"), 2^24 are stored, in 201 MB of jsonb (its
# bound is 256 MiB; a one-digit number takes 12 bytes where its text, "1, ", takes 3, the most per byte of
# text). No element of an array takes under 3 bytes of text: a result within 3 * 2^24 bytes always fits.
PG_JSON_LIMIT_BYTES = 3 * 2**24
# The JSON one outcome statement carries at most on PostgreSQL (more rows take more statements): a statement's
# parameters travel in one message, and each column's array is one value, both at most 1 GiB.
PG_STATEMENT_JSON_BYTES = 256 * 2**20
# Any value serves: it only names the lock all claimers of concurrency-limited kinds share.
_KIND_LIMIT_LOCK = 0x1F4E_0001


def job_from_row(row: Mapping[Any, Any]) -> Job:
    return _job_from_values(dict(row))


_STATUSES = {status.value: status for status in JobStatus}


def _job_from_values(values: dict[str, Any]) -> Job:
    """`job_from_row` of a dict made for it (changed in place)."""
    status = values["status"]
    values["status"] = _STATUSES.get(status) or JobStatus(status)
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
    renewed: bool  # False: held, but another transaction was writing the row (renewed at the next beat)


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
                await self.conn.execute(_NOTIFY, {"kind": kind})
        return placed

    async def requeue(self, job: Job) -> Job | None:
        """Put a failed job back in line, as if it were submitted now; None if its row is gone (the retention
        of ended jobs deleted it since it was read)."""
        [job] = await self._place_in_lanes([job])
        updated = await self.conn.execute(jobs.update().where(jobs.c.id == job.id).values(**job_values(job)))
        if not updated.rowcount:
            return None
        await self._record([("job.requeued", job, None)])
        return job

    async def _place_in_lanes(self, batch: Sequence[Job]) -> list[Job]:
        """Give each job `max(its lane's last seq + 1, head of its priority)`, see `lane_upsert`."""
        if self.dialect == "mysql":
            head = sa.select(queue_head(sa.bindparam("priority", type_=sa.Integer)))
            return place(batch, await mysql.place_in_lanes(self.conn, lane_counts(batch), head))
        # PostgreSQL looks for the head from the one this process saw last (`lanes.queue_head`).
        heads = _HEADS_SEEN.setdefault(self.conn.sync_engine, HeadHints()) if self.dialect == "postgresql" else None
        lasts = {}
        for (tenant, priority), count in lane_counts(batch).items():
            hint = heads.hint(priority) if heads is not None else NO_HINT
            row = (await self.conn.execute(lane_upsert(self.dialect), lane_params(tenant, priority, count, hint))).one()
            lasts[(tenant, priority)] = int(row[0])
            if heads is not None:
                heads.saw(priority, int(row[1]), hint)
        return place(batch, lasts)

    async def json_limit_bytes(self) -> int:
        """The largest result (`inputs.quoted_size`) a job's outcome may carry on this engine: over it, the
        write would fail (`inputs.unstorable`). SQLite: its longest value, less a MiB for the row's others."""
        if self.dialect == "mysql":
            return await mysql.json_limit_bytes(self.conn)
        if self.dialect == "postgresql":
            return PG_JSON_LIMIT_BYTES
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            return probe.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - 2**20

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
            .where(jobs.c.status == sql.QUEUED)
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
            for row in await self.conn.execute(sql.lock_rows(self.dialect == "postgresql"), {"ids": ids})
        }

    async def update_running(self, job_id: str, owner: str, values: dict[str, Any]) -> bool:
        """Set `values` of a running job `owner` holds (its progress, its checkpoint): no status change."""
        update = sql.running_update(tuple(sorted(values)))
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
        from_place: tuple[int, int] | None = None,
    ) -> list[Job]:
        """Lease up to `limit` runnable jobs of `kinds` to `owner`, in (priority, fair_seq, id) order.
        `from_place` (priority, fair_seq): only jobs at or after it in that order, on PostgreSQL and SQLite
        and where no kind among `kinds` is limited; elsewhere the whole queue is read (`ClaimStart`)."""
        slots = await self._free_slots(kind_limits, kinds)
        allowed = [kind for kind in kinds if slots.get(kind, 1) > 0]
        if not allowed or limit <= 0:
            return []
        params = {"now": now, "limit": limit, "owner": owner, "expires": now + timedelta(seconds=lease_s)}
        chosen: list[str] = []
        if slots:  # limited kinds: pick in Python, within each kind's free slots
            candidates_of = mysql.claim_candidates if self.dialect == "mysql" else sql.claim_candidates
            candidates = await self.conn.execute(candidates_of(tuple(allowed)), params)
            chosen = sql.within_slots(candidates, slots)
            if not chosen:
                return []
            update = sql.claim_update(None, self.dialect == "postgresql")
            params["ids"] = chosen
        else:  # the common case: select and update in one statement, one round trip
            update = sql.claim_update(tuple(allowed), self.dialect == "postgresql", from_place is not None)
            if from_place is not None:
                params["from_priority"], params["from_seq"] = from_place
        if self.dialect == "mysql":
            rows = await mysql.claim(self.conn, kinds=None if slots else allowed, ids=chosen, params=params)
            claimed = [job_from_row(row) for row in rows]
        else:
            result = await self.conn.execute(update, params)
            # Each job from a dict of its row's tuple: a RowMapping builds a view of its keys for every row.
            keys = list(result.keys())
            claimed = [_job_from_values(dict(zip(keys, row, strict=True))) for row in result]
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
        groups = sql.finish_groups(rows, now)
        must_lock = (len(groups) > 1 and self.dialect == "postgresql") or self.dialect == "mysql"
        if must_lock and not locked:
            await self.lock_rows(job.id for job, _ in rows)
        if self.dialect == "postgresql":
            applied: set[str] = set()
            for columns, params in groups.items():
                applied.update(await self._finish_group_pg(owner, columns, params))
        elif self.dialect == "mysql":
            applied = await mysql.finish_running(self.conn, owner, groups, [job.id for job, _ in rows], now)
        else:
            for columns, params in groups.items():
                await self.conn.execute(sql.running_update(columns), [p | {"_owner": owner} for p in params])
            result = await self.conn.execute(sql.finished_rows(), {"ids": [job.id for job, _ in rows], "now": now})
            applied = {row[0] for row in result}
        await self._record((_ended_event(values), job, values) for job, values in rows if job.id in applied)
        return applied

    async def _finish_group_pg(self, owner: str, columns: tuple[str, ...], params: list[dict[str, Any]]) -> set[str]:
        """One `UPDATE … FROM unnest(…)` for a group's rows (in id order; more when their JSON passes
        PG_STATEMENT_JSON_BYTES): the values that differ between rows go in as arrays, those all rows share as
        single parameters; the rows that applied come back."""
        first = params[0]
        varying = tuple(c for c in columns if any(p[c] != first[c] for p in params))
        shared = tuple(c for c in columns if c not in varying)
        as_json = {c for c in varying if isinstance(jobs.c[c].type, sa.JSON)}
        values = {c: [sql.json_text(p[c]) if c in as_json else p[c] for p in params] for c in varying}
        sizes = [sum(len(values[c][row]) for c in as_json) for row in range(len(params))]
        applied: set[str] = set()
        for run in sql.runs_within(sizes, PG_STATEMENT_JSON_BYTES):
            binds: dict[str, Any] = {"_owner": owner, "_ids": [p["_id"] for p in params[run.start : run.stop]]}
            binds |= {f"s_{c}": first[c] for c in shared} | {f"v_{c}": values[c][run.start : run.stop] for c in varying}
            result = await self.conn.execute(sql.finish_group_statement(varying, shared), binds)
            applied.update(row[0] for row in result)
        return applied

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
            .where(jobs.c.status == sql.RUNNING, jobs.c.kind.in_(limited))
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
            rows = await mysql.renew_leases(self.conn, sql.held_by_owner(False), params)
        else:
            rows = list((await self.conn.execute(sql.renew_leases(self.dialect == "postgresql"), params)).mappings())
        renewed = {row["id"] for row in rows}
        if len(renewed) < len(ids):  # skipped while locked, or no longer held
            skipped = [job_id for job_id in ids if job_id not in renewed]
            rows += (
                await self.conn.execute(sql.held_leases(self.dialect == "postgresql"), {"ids": skipped, "owner": owner})
            ).mappings()
        return [
            LeaseState(row["id"], bool(row["cancel_requested"]), row["deadline_at"], row["id"] in renewed)
            for row in rows
        ]

    async def expired_leases(self, now: datetime, limit: int = 100) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.status == sql.RUNNING, jobs.c.lease_expires_at < now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [job_from_row(row) for row in (await self.conn.execute(query)).mappings()]

    async def overdue_queued(self, now: datetime, limit: int = 100) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.status == sql.QUEUED, jobs.c.deadline_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [job_from_row(row) for row in (await self.conn.execute(query)).mappings()]
