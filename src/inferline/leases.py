"""Named leases in the database: one holder across the fleet at a time, for loops that must run once
(the metrics sampler, the alert evaluator).

A lease is taken when its row is absent, expired, or already the caller's, inside a write transaction
that locks the row (FOR UPDATE on PostgreSQL, the write lock on SQLite); two first-ever takers race on
the primary key and one of them gets nothing. The holder renews it every run, well within `ttl_s`; a
holder that dies is replaced once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.ids import new_id
from inferline.schema import leases

log = structlog.get_logger(__name__)


def process_owner() -> str:
    """A name for this process that no other process has, now or later."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{new_id()}"


async def acquire(engine: AsyncEngine, name: str, owner: str, *, ttl_s: float) -> bool:
    """Take or renew lease `name` for `ttl_s` seconds; False when another owner holds it."""
    now = utcnow()
    expires_at = now + timedelta(seconds=ttl_s)
    try:
        async with db.write(engine) as conn:
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


async def release(engine: AsyncEngine, name: str, owner: str) -> None:
    """Give the lease up (at shutdown), so the next holder need not wait for it to expire."""
    async with db.write(engine) as conn:
        await conn.execute(leases.delete().where(leases.c.name == name, leases.c.owner == owner))


async def holder(engine: AsyncEngine, name: str) -> str | None:
    """The owner of an unexpired lease `name`, if any."""
    async with db.read(engine) as conn:
        row = (await conn.execute(sa.select(leases).where(leases.c.name == name))).mappings().first()
    return str(row["owner"]) if row is not None and row["expires_at"] > utcnow() else None


async def run_elected(
    engine: AsyncEngine,
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    every_s: float,
    stop: asyncio.Event,
    owner: str | None = None,
) -> None:
    """Run `work` every `every_s` while this process holds lease `name` (taken for three periods, so one
    slow run does not lose it), until `stop` is set; then give the lease up."""
    owner = owner or process_owner()
    try:
        while not stop.is_set():
            try:
                if await acquire(engine, name, owner, ttl_s=max(every_s * 3, 5.0)):
                    await work()
            except Exception:
                log.exception("elected_loop_failed", lease=name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
    finally:
        with contextlib.suppress(Exception):
            await release(engine, name, owner)
