"""The fleet's job metrics read from the jobs table: failure ratios and latency percentiles per kind, each
fleet-wide and per tenant, on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.submission import JobRequest, Submitter
from inferline.monitor.jobstats import job_samples
from inferline.schema import jobs


async def test_latency_percentiles_and_failure_ratios_per_kind_fleet_wide_and_per_tenant(engine: AsyncEngine) -> None:
    registry = KindRegistry()
    register_echo(registry)
    submitter = Submitter(engine, registry, default_max_attempts=1)
    now = utcnow()
    # Tenant a: ten jobs of 1..10 s, the 10 s one failed; tenant b: one of 0.25 s; one canceled while queued.
    ended = [("a", 1.0 * i, "failed" if i == 10 else "succeeded") for i in range(1, 11)] + [("b", 0.25, "succeeded")]

    async def submitted(tenant: str) -> str:
        job, _ = await submitter.submit(JobRequest(kind="echo", input={"message": "m"}), tenant=tenant)
        return job.id

    updates = []
    for tenant, seconds, status in ended:
        started, finished = now - timedelta(seconds=seconds + 5), now - timedelta(seconds=5)
        updates.append((await submitted(tenant), {"status": status, "started_at": started, "finished_at": finished}))
    updates.append((await submitted("a"), {"status": "canceled", "finished_at": now}))  # never started
    long_ago = {"status": "succeeded", "started_at": now - timedelta(hours=2), "finished_at": now - timedelta(hours=1)}
    updates.append((await submitted("a"), long_ago))  # out of the window
    async with db.write(engine) as conn:
        for job_id, values in updates:
            await conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    async with db.read(engine) as conn:
        samples = await job_samples(conn, now)

    def value(name: str, tenant: str, **labels: str) -> float:
        [found] = [
            s.value for s in samples if (s.name, s.tenant) == (name, tenant) and s.labels == {"kind": "echo", **labels}
        ]
        return found

    assert value("job_latency_s", "a", quantile="0.5") == pytest.approx(5.0, abs=0.01)
    assert value("job_latency_s", "a", quantile="0.99") == pytest.approx(10.0, abs=0.01)
    assert value("job_latency_s", "b", quantile="0.5") == pytest.approx(0.25, abs=0.01)
    assert value("job_latency_s", "", quantile="0.5") == pytest.approx(5.0, abs=0.01)  # 11 jobs: the 6th
    assert value("job_failure_ratio", "a") == pytest.approx(1 / 11)  # the canceled one counts as ended
    assert value("job_failure_ratio", "") == pytest.approx(1 / 12)
