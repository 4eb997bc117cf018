"""The job store's statements that MariaDB (10.6+) and MySQL 8 cannot run as PostgreSQL and SQLite do.

MariaDB has no `UPDATE … RETURNING` (it has `INSERT`/`DELETE … RETURNING`), refuses `LIMIT` in an `IN`
subquery, and refuses a subquery on the table an `UPDATE` or `INSERT … ON DUPLICATE KEY` writes (error
1093). So a claim locks its rows with `SELECT … FOR UPDATE SKIP LOCKED`, updates them by id, and builds
the claimed rows in Python from what it read and wrote: two round trips instead of one. Lane upserts read
the queue head first and bind it. Everything else the store does runs unchanged on MariaDB.

Sessions run at READ COMMITTED (`db._create_mysql_engine`): locking reads then lock only the rows they
return, no gaps, as on PostgreSQL.

InnoDB locks index records, and an `UPDATE … WHERE id = ? AND status = 'running' …` may be run through
the secondary index `(status, lease_expires_at)`, locking its entry before the row's primary key. A lease
renewal holds the primary key (its `FOR UPDATE SKIP LOCKED`) and then needs that same entry, since it
changes `lease_expires_at`: a deadlock, seen in the tests. So on MariaDB the store locks a running row by
primary key (`JobStore.lock_rows`) before it writes the row's outcome or progress: the renewal then skips
the row, or holds it and finishes before the write goes on.

A batch of outcomes is one `UPDATE jobs JOIN (SELECT … UNION ALL SELECT …) v ON jobs.id = v._id` per set
of columns, not an executemany: asyncmy runs an executemany of UPDATEs as one round trip per row (64 for
a batch of 64), which held the drain to a third of PostgreSQL's rate.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.jobs import statements as sql
from inferline.jobs.model import JobStatus
from inferline.schema import UTCDateTime, job_locks, jobs, lanes

_NOW = sa.bindparam("now", type_=UTCDateTime())
_RUNNING = JobStatus.RUNNING.value
_QUEUED = JobStatus.QUEUED.value
# A claim reads the queue in its order, `(status, priority, fair_seq, id)`, and stops at its limit. For a
# kind with few queued jobs MariaDB's optimizer preferred the `(status, kind)` index and a sort: a
# locking read then locks every queued job of that kind, not only the `limit` it returns, until the claim
# commits, and the other workers skip them all (tests/adapters/test_store.py). The hint pins the order.
CLAIM_INDEX_HINT = "FORCE INDEX (ix_jobs_claim)"


async def place_in_lanes(
    conn: AsyncConnection, counts: Mapping[tuple[str, int], int], head: sa.Select[Any]
) -> dict[tuple[str, int], int]:
    """Each lane's new last seq after `counts[lane]` jobs join it (the statement `lanes.lane_upsert`
    runs in one round trip elsewhere). `head` selects the queue head at bind parameter `priority`. The
    upsert's row lock keeps two API processes from handing out the same seqs; the head, read before it,
    only decides where a lane restarts."""
    lasts = {}
    for (tenant, priority), count in counts.items():
        head_seq = int((await conn.execute(head, {"priority": priority})).scalar_one())
        params = {"tenant": tenant, "priority": priority, "count": count, "head": head_seq}
        await conn.execute(_lane_upsert(), params)
        lasts[(tenant, priority)] = int((await conn.execute(_lane_last(), params)).scalar_one())
    return lasts


@functools.cache
def _lane_upsert() -> sa.Insert:
    head = sa.bindparam("head", type_=sa.BigInteger)
    count = sa.bindparam("count", type_=sa.BigInteger)
    insert = mysql.insert(lanes).values(
        tenant=sa.bindparam("tenant", type_=sa.String), priority=sa.bindparam("priority"), last_seq=head - 1 + count
    )
    return insert.on_duplicate_key_update(last_seq=sa.func.greatest(lanes.c.last_seq, head - 1) + count)


@functools.cache
def _lane_last() -> sa.Select[Any]:
    return sa.select(lanes.c.last_seq).where(
        lanes.c.tenant == sa.bindparam("tenant"), lanes.c.priority == sa.bindparam("priority")
    )


async def claim(
    conn: AsyncConnection, *, kinds: Sequence[str] | None, ids: Sequence[str], params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Lease the first `limit` runnable jobs of `kinds` (or, with `kinds` None, the jobs `ids`, which
    this transaction locked already) to `owner` until `expires`; returns their rows as written."""
    query = _claimable(tuple(kinds)) if kinds is not None else _by_ids()
    rows = [dict(row) for row in (await conn.execute(query, {**params, "ids": list(ids)})).mappings()]
    if not rows:
        return []
    await conn.execute(_claim_update(), {**params, "ids": [row["id"] for row in rows]})
    now = params["now"]
    for row in rows:
        row |= {
            "status": _RUNNING,
            "attempts": row["attempts"] + 1,
            "lease_owner": params["owner"],
            "lease_expires_at": params["expires"],
            "started_at": row["started_at"] or now,
            "updated_at": now,
        }
    return rows


@functools.cache
def _claimable(kinds: tuple[str, ...]) -> sa.Select[Any]:
    return _in_queue_order(sa.select(jobs), kinds)


@functools.cache
def claim_candidates(kinds: tuple[str, ...]) -> sa.Select[Any]:
    """`statements.claim_candidates` on MariaDB: (id, kind) of the first `limit` runnable jobs of `kinds`."""
    return _in_queue_order(sa.select(jobs.c.id, jobs.c.kind), kinds)


def _in_queue_order(query: sa.Select[Any], kinds: tuple[str, ...]) -> sa.Select[Any]:
    """The first `limit` runnable jobs of `kinds`, locked unless another claim holds them: read in the
    queue's order through `ix_jobs_claim` (CLAIM_INDEX_HINT), stopping at the limit. With the order
    pinned, a claim that finds nothing would walk every queued job of other kinds (91 ms for 19,000 of
    them, polled every `mysql_poll_s` by each idle worker): the `EXISTS` on `(status, kind)`, which
    MariaDB evaluates once, before the walk, and without locks, answers that case from the index."""
    waiting = jobs.alias("waiting")
    due = sa.exists().where(waiting.c.status == _QUEUED, waiting.c.kind.in_(kinds), waiting.c.run_after <= _NOW)
    return (
        query.with_hint(jobs, CLAIM_INDEX_HINT, "mysql")
        .where(jobs.c.status == _QUEUED, jobs.c.run_after <= _NOW, jobs.c.kind.in_(kinds), due)
        .order_by(jobs.c.priority, jobs.c.fair_seq, jobs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _by_ids() -> sa.Select[Any]:
    return sa.select(jobs).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.status == _QUEUED)


@functools.cache
def _claim_update() -> sa.Update:
    return (
        jobs.update()
        .where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
        .values(
            status=_RUNNING,
            attempts=jobs.c.attempts + 1,
            lease_owner=sa.bindparam("owner"),
            lease_expires_at=sa.bindparam("expires"),
            started_at=sa.func.coalesce(jobs.c.started_at, _NOW),
            updated_at=_NOW,
        )
    )


async def renew_leases(conn: AsyncConnection, held: sa.ColumnElement[bool], params: Mapping[str, Any]) -> list[Any]:
    """The leases `owner` holds among `ids` (`held`) and no other transaction is writing, renewed without
    waiting; returns (id, cancel_requested, deadline_at) of each renewed one."""
    locked = sa.select(jobs.c.id, jobs.c.cancel_requested, jobs.c.deadline_at).where(held)
    rows = list((await conn.execute(locked.order_by(jobs.c.id).with_for_update(skip_locked=True), params)).mappings())
    if rows:
        renew = jobs.update().where(jobs.c.id.in_(sa.bindparam("renewed", expanding=True)))
        renew = renew.values(lease_expires_at=sa.bindparam("expires"))
        await conn.execute(renew, {"renewed": [row["id"] for row in rows], "expires": params["expires"]})
    return rows


# The values one finish statement carries at most, in characters (a row bigger than this goes alone): a
# statement is one packet, and MariaDB refuses those over `max_allowed_packet` (16 MiB by default; a
# character takes up to 4 bytes). An executemany sent each row in its own packet.
FINISH_STATEMENT_CHARS = 2_000_000
_SMALL_VALUE_CHARS = 32  # numbers, datetimes, NULL: what each costs the budget


async def finish_running(
    conn: AsyncConnection,
    owner: str,
    groups: Mapping[tuple[str, ...], Sequence[Mapping[str, Any]]],
    ids: Sequence[str],
    now: Any,
) -> set[str]:
    """Write the ends of attempts (`groups`: `statements.finish_groups`, each in id order, over rows this
    transaction locked in id order) where `owner` still holds them running: one statement per set of
    columns (more when their values pass FINISH_STATEMENT_CHARS); returns the ids that applied, read
    back by the `updated_at` they were given (no `UPDATE … RETURNING` here)."""
    for columns, params in groups.items():
        first = params[0]
        varying = tuple(c for c in columns if any(p[c] != first[c] for p in params))
        shared = tuple(c for c in columns if c not in varying)
        as_json = {c for c in varying if isinstance(jobs.c[c].type, sa.JSON)}
        rows = []  # (id, the varying values as bound: JSON as its text, so its size is known)
        for p in params:
            rows.append((p["_id"], [sql.json_text(p[c]) if c in as_json else p[c] for c in varying]))
        sizes = [
            len(job_id) + sum(len(v) if isinstance(v, str) else _SMALL_VALUE_CHARS for v in vs) for job_id, vs in rows
        ]
        for run in sql.runs_within(sizes, FINISH_STATEMENT_CHARS):
            chunk = rows[run.start : run.stop]
            binds: dict[str, Any] = {"_owner": owner} | {f"s_{c}": first[c] for c in shared}
            for row, (job_id, values) in enumerate(chunk):
                binds[f"i{row}"] = job_id
                binds.update((f"v{row}_{c}", value) for c, value in zip(varying, values, strict=True))
            await conn.execute(_finish_statement(varying, shared, len(chunk)), binds)
    return {row[0] for row in await conn.execute(sql.finished_rows(), {"ids": list(ids), "now": now})}


@functools.lru_cache(maxsize=512)
def _finish_statement(varying: tuple[str, ...], shared: tuple[str, ...], count: int) -> sa.TextClause:
    """`UPDATE jobs JOIN (the rows' ids and `varying` values, a UNION ALL of `count` one-row SELECTs) v`,
    setting `shared` columns from single parameters, where `_owner` still holds the job running. The
    derived table is read first and each job found by its primary key (eq_ref). Varying JSON columns
    come bound as their text."""
    first = ", ".join([":i0 AS `_id`", *(f":v0_{c} AS `{c}`" for c in varying)])
    selects = [f"SELECT {first}"]
    selects += [f"SELECT {', '.join([f':i{row}', *(f':v{row}_{c}' for c in varying)])}" for row in range(1, count)]
    sets = [f"jobs.`{c}` = :s_{c}" for c in shared] + [f"jobs.`{c}` = v.`{c}`" for c in varying]
    statement = sa.text(
        # Column names come from the schema, values are all bound.
        f"UPDATE jobs JOIN ({' UNION ALL '.join(selects)}) AS v ON jobs.id = v.`_id` "  # noqa: S608
        f"SET {', '.join(sets)} WHERE jobs.lease_owner = :_owner AND jobs.status = '{_RUNNING}'"
    )
    types = {c: sa.Text() if isinstance(jobs.c[c].type, sa.JSON) else jobs.c[c].type for c in varying}
    binds = [sa.bindparam(f"s_{c}", type_=jobs.c[c].type) for c in shared]
    binds += [sa.bindparam(f"i{row}", type_=sa.String()) for row in range(count)]
    binds += [sa.bindparam(f"v{row}_{c}", type_=types[c]) for row in range(count) for c in varying]
    return statement.bindparams(*binds)


# Room in the statement of one job's outcome for all but its result, as `max_allowed_packet` counts it: the
# SQL text and the other columns (a stage and a detail, 41 KB at most: `inputs.shown_text`; progress, times).
STATEMENT_ROOM_BYTES = 64 * 1024


async def json_limit_bytes(conn: AsyncConnection) -> int:
    """The largest result (`inputs.quoted_size`) a job's outcome statement carries within the server's
    `max_allowed_packet` (a statement is one packet; one over it fails, with the rest of its batch)."""
    packet_bytes = int((await conn.execute(sa.text("SELECT @@max_allowed_packet"))).scalar_one())
    return packet_bytes - STATEMENT_ROOM_BYTES


async def lock_kind_limits(conn: AsyncConnection) -> None:
    """Serialize claims of concurrency-limited kinds until this transaction ends, as PostgreSQL's
    transaction-scoped advisory lock does: MariaDB's GET_LOCK is held by the session, past the commit,
    so a row of `job_locks` is locked instead, made by the first such claim (the upsert locks the row
    whether it inserts it or finds it; two first ones wait on the key)."""
    await conn.execute(_KIND_LIMITS_LOCK)


_KIND_LIMITS_LOCK = mysql.insert(job_locks).values(name="kind_limits").on_duplicate_key_update(name=job_locks.c.name)
