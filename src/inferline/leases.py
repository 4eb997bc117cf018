"""Named leases in the database: one holder across the fleet at a time, for loops that must run once
(the metrics sampler, the alert evaluator).

A lease is taken when its row is absent, expired, or already the caller's, inside a write transaction
that locks the row (FOR UPDATE on PostgreSQL, the write lock on SQLite); two first-ever takers race on
the primary key and one of them gets nothing. Expiry is the database's time, never a host's: hosts
whose clocks disagree by more than the TTL would otherwise both hold it (SQLite is one host's file,
so there its clock is the database's).

Holding a lease is not enough to write: a holder paused past its TTL (a long step, a stalled host) may
have been replaced without knowing. `run_elected` bounds each step to end before its lease expires,
and every write of an elected loop starts with `confirm`, which locks the lease row and refuses
(LeaseLost) unless it is still the caller's and unexpired. A taker then waits for that write to commit
before it takes over, so the two never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import LeaseLost
from inferline.ids import new_id
from inferline.schema import UTCDateTime, leases

log = structlog.get_logger(__name__)

MIN_TTL_S = 5.0


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str


def process_owner() -> str:
    """A name for this process that no other process has, now or later."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{new_id()}"


def _now(conn: AsyncConnection) -> sa.ColumnElement[datetime]:
    """The database's current time as an SQL expression (this host's on SQLite: the file is local)."""
    if conn.dialect.name == "postgresql":
        return sa.func.now(type_=UTCDateTime())
    if conn.dialect.name == "mysql":
        return sa.func.utc_timestamp(6, type_=UTCDateTime())
    return sa.literal(utcnow(), UTCDateTime())


async def database_now(conn: AsyncConnection) -> datetime:
    value = await conn.scalar(sa.select(_now(conn)))
    assert isinstance(value, datetime)
    return value


async def acquire(engine: AsyncEngine, name: str, owner: str, *, ttl_s: float) -> bool:
    """Take or renew lease `name` for `ttl_s` seconds; False when another owner holds it."""
    try:
        async with db.write(engine) as conn:
            now = await database_now(conn)
            expires_at = now + timedelta(seconds=ttl_s)
            query = sa.select(leases.c.owner, leases.c.expires_at).where(leases.c.name == name).with_for_update()
            row = (await conn.execute(query)).first()
            if row is None:
                await conn.execute(leases.insert().values(name=name, owner=owner, expires_at=expires_at))
                return True
            if row.owner != owner and row.expires_at > now:
                return False
            await conn.execute(leases.update().where(leases.c.name == name).values(owner=owner, expires_at=expires_at))
            return True
    except sa.exc.IntegrityError:  # another process inserted the first row at the same time
        return False


async def confirm(conn: AsyncConnection, lease: Lease) -> None:
    """Inside a write transaction, before its writes: lock the lease row and check it is still the
    caller's and unexpired, else raise LeaseLost (the transaction's writes must not happen)."""
    l = leases  # noqa: E741
    held = await conn.execute(
        l.update()
        .where(l.c.name == lease.name, l.c.owner == lease.owner, l.c.expires_at > _now(conn))
        .values(owner=l.c.owner)
    )
    if held.rowcount != 1:
        raise LeaseLost(f"lease {lease.name} is no longer held by this process")


async def release(engine: AsyncEngine, name: str, owner: str) -> None:
    """Give the lease up (at shutdown), so the next holder need not wait for it to expire."""
    async with db.write(engine) as conn:
        await conn.execute(leases.delete().where(leases.c.name == name, leases.c.owner == owner))


async def holder(engine: AsyncEngine, name: str) -> str | None:
    """The owner of an unexpired lease `name`, if any."""
    async with db.read(engine) as conn:
        query = sa.select(leases.c.owner).where(leases.c.name == name, leases.c.expires_at > _now(conn))
        owner = await conn.scalar(query)
    return str(owner) if owner is not None else None


def step_bound_s(ttl_s: float) -> float:
    """How long one step may run from just before its lease was taken: it ends before the lease expires
    (the fifth left over covers the commit of its last write and the acquire's own round trip)."""
    return ttl_s * 0.8


async def run_elected(
    engine: AsyncEngine,
    name: str,
    work: Callable[[Lease], Awaitable[object]],
    *,
    every_s: float,
    stop: asyncio.Event,
    owner: str | None = None,
    ttl_s: float | None = None,
) -> None:
    """Run `work` every `every_s` while this process holds lease `name` (taken for three periods, at
    least MIN_TTL_S, so one slow run does not lose it), until `stop` is set; then give the lease up.
    Each run is cancelled when it would outlive its lease (`step_bound_s`)."""
    lease = Lease(name, owner or process_owner())
    ttl_s = ttl_s or max(every_s * 3, MIN_TTL_S)
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            started = loop.time()  # before the lease's clock reading: the bound errs early
            try:
                if await acquire(engine, name, lease.owner, ttl_s=ttl_s):
                    async with asyncio.timeout_at(started + step_bound_s(ttl_s)):
                        await work(lease)
            except TimeoutError:
                log.warning("elected_step_timed_out", lease=name, bound_s=step_bound_s(ttl_s))
            except LeaseLost:
                log.warning("elected_lease_lost", lease=name)
            except Exception:
                log.exception("elected_loop_failed", lease=name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
    finally:
        with contextlib.suppress(Exception):
            await release(engine, name, lease.owner)
