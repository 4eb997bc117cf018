"""Each process that runs workers reports itself every `monitor_presence_s`: its job slots and the state
of each model it loaded. The sampler reads these rows for the fleet's worker count, the age of the
newest report (a fleet whose workers all died or stopped reports no more) and which models are down
anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.inference.runtime import ModelRuntime
from inferline.monitor.samples import Sample
from inferline.schema import monitor_processes

log = structlog.get_logger(__name__)

FORGET_AFTER_S = 86_400  # a process silent this long is dropped from the table


def model_states(models: ModelRuntime) -> dict[str, str]:
    return {row["name"]: row["state"] for row in models.describe() if row["state"] != "unloaded"}


async def report(engine: AsyncEngine, process_id: str, *, workers: int, models: ModelRuntime) -> None:
    now = utcnow()
    values = {"workers": workers, "models": model_states(models), "last_seen_at": now}
    p = monitor_processes
    async with db.write(engine) as conn:
        updated = await conn.execute(p.update().where(p.c.id == process_id).values(**values))
        if not updated.rowcount:
            host = socket.gethostname()[:255]
            await conn.execute(p.insert().values(id=process_id, host=host, pid=os.getpid(), started_at=now, **values))
        await conn.execute(p.delete().where(p.c.last_seen_at < now - timedelta(seconds=FORGET_AFTER_S)))


async def forget(engine: AsyncEngine, process_id: str) -> None:
    """At a clean stop: the process no longer counts as workers at once, but its last report stays as
    the fleet's last heartbeat until another process reports (a fleet whose last worker stopped, on
    purpose or not, runs no jobs)."""
    p = monitor_processes
    async with db.write(engine) as conn:
        await conn.execute(p.update().where(p.c.id == process_id).values(workers=0, models={}))


async def run_presence(
    engine: AsyncEngine, process_id: str, *, workers: int, models: ModelRuntime, every_s: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await report(engine, process_id, workers=workers, models=models)
        except Exception:
            log.exception("presence_report_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    with contextlib.suppress(Exception):  # the database may be gone at shutdown: the row then ages out
        await forget(engine, process_id)


async def fleet_samples(
    conn: AsyncConnection, now: datetime, *, every_s: float, watching_since: datetime
) -> list[Sample]:
    """`watching_since`: when the sampling process started, the heartbeat's age when no process has
    reported in FORGET_AFTER_S (or ever): the series is there, and grows, even then."""
    rows = (await conn.execute(sa.select(monitor_processes))).mappings().all()
    recent = now - timedelta(seconds=every_s * 3)
    live = [row for row in rows if row["last_seen_at"] >= recent and row["workers"] > 0]
    newest = max((row["last_seen_at"] for row in rows), default=watching_since)
    samples = [
        Sample("workers", float(len(live))),
        Sample("worker_slots", float(sum(row["workers"] for row in live))),
        Sample("worker_heartbeat_age_s", max(0.0, (now - newest).total_seconds())),
    ]
    states: dict[str, float] = {}
    for row in live:
        for model, state in row["models"].items():
            states[model] = min(states.get(model, 1.0), 0.0 if state == "failed" else 1.0)
    samples.extend(Sample("model_up", up, {"model": model}) for model, up in sorted(states.items()))
    return samples
