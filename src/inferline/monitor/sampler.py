"""The metrics sampler: one process of the fleet at a time (lease `monitor.sampler`) records every
`sample_s` the system's and the application's metrics, then folds raw samples into 1-minute and
1-minute into 1-hour rows and drops rows past their retention."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db, leases
from inferline.clock import utcnow
from inferline.metrics import Metrics
from inferline.monitor import jobstats, presence, samples
from inferline.monitor.process import ProcessCounters
from inferline.monitor.samples import HOUR, MINUTE, RAW, Sample
from inferline.monitor.system import SystemProbe
from inferline.schema import webhook_deliveries
from inferline.threads import to_thread

LEASE = "monitor.sampler"


@dataclass
class SamplerConfig:
    sample_s: float
    presence_s: float
    retention_s: Mapping[int, float] = field(
        default_factory=lambda: {RAW: 86_400, MINUTE: 7 * 86_400, HOUR: 365 * 86_400}
    )


class Sampler:
    def __init__(self, engine: AsyncEngine, metrics: Metrics, data_dir: Path, config: SamplerConfig) -> None:
        self.engine = engine
        self.config = config
        self.system = SystemProbe(data_dir)
        self.process = ProcessCounters(metrics)
        self.started_at = utcnow()

    async def run(self, stop: asyncio.Event, *, owner: str | None = None) -> None:
        try:
            await leases.run_elected(
                self.engine, LEASE, self.step, every_s=self.config.sample_s, stop=stop, owner=owner
            )
        finally:
            self.system.close()

    async def step(self, lease: leases.Lease) -> int:
        """Record one sample of everything, then roll up and prune, while `lease` is this process's
        (LeaseLost otherwise); returns the samples written."""
        now = utcnow()
        written = await self.sample(lease, now)
        await self.maintain(lease, now)
        return written

    async def sample(self, lease: leases.Lease, now: datetime) -> int:
        collected = await to_thread(self.system.samples)
        collected += self.process.samples()
        async with db.read(self.engine, slow=True) as conn:
            collected += await jobstats.job_samples(conn, now)
            collected += await presence.fleet_samples(
                conn, now, every_s=self.config.presence_s, watching_since=self.started_at
            )
            collected += await _webhook_samples(conn, now)
        async with db.write(self.engine, slow=True) as conn:
            await leases.confirm(conn, lease)
            return await samples.insert(conn, collected, now)

    async def maintain(self, lease: leases.Lease, now: datetime) -> None:
        async with db.write(self.engine, slow=True) as conn:
            await leases.confirm(conn, lease)
            await samples.rollup(conn, source_s=RAW, target_s=MINUTE, until=now, max_span_s=HOUR)
            await samples.rollup(conn, source_s=MINUTE, target_s=HOUR, until=now, max_span_s=24 * HOUR)
            await samples.prune(conn, self.config.retention_s, now)


async def _webhook_samples(conn: AsyncConnection, now: datetime) -> list[Sample]:
    d = webhook_deliveries
    pending = await conn.scalar(sa.select(sa.func.count()).where(d.c.status == "pending"))
    failed = await conn.scalar(
        sa.select(sa.func.count()).where(d.c.status == "failed", d.c.created_at >= now - timedelta(hours=1))
    )
    return [
        Sample("webhook_deliveries_pending", float(pending or 0)),
        Sample("webhook_delivery_failures_1h", float(failed or 0)),
    ]
