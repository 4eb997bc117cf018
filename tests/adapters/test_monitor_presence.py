"""The fleet's worker series from presence reports: they exist with no worker at all, and a fleet whose
last worker stopped, cleanly or not, fires the built-in "no worker heartbeat" rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.inference.runtime import ModelRuntime
from inferline.leases import Lease, acquire
from inferline.metrics import Metrics
from inferline.monitor import presence, samples
from inferline.monitor.evaluator import LEASE as EVALUATOR
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.notifier import Notifier
from inferline.monitor.rules import ensure_default_rules
from inferline.monitor.samples import HOUR, MINUTE, RAW
from inferline.outbound import OutboundPolicy

RETENTION = {RAW: 86_400.0, MINUTE: 7 * 86_400.0, HOUR: 365 * 86_400.0}


async def fleet(engine: AsyncEngine, now: datetime, watching_since: datetime) -> dict[str, float]:
    async with db.read(engine) as conn:
        found = await presence.fleet_samples(conn, now, every_s=15, watching_since=watching_since)
    return {sample.name: sample.value for sample in found}


async def test_no_worker_ever_is_zero_workers_and_a_growing_heartbeat_age(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    found = await fleet(engine, now, watching_since=now - timedelta(seconds=200))
    assert found == {"workers": 0.0, "worker_slots": 0.0, "worker_heartbeat_age_s": 200.0}


async def test_the_last_worker_stopping_fires_no_worker_heartbeat(engine: AsyncEngine) -> None:
    models = ModelRuntime(device="cpu", modes={}, queue_limit=10, metrics=Metrics())
    await presence.report(engine, "w1", workers=2, models=models)
    now = datetime.now(UTC)
    assert (await fleet(engine, now, now))["workers"] == 1.0
    await presence.forget(engine, "w1")  # a clean stop: no longer a worker at once
    found = await fleet(engine, now, now)
    assert found["workers"] == 0.0 and found["worker_slots"] == 0.0
    later = now + timedelta(seconds=130)
    found = await fleet(engine, later, now)
    assert found["worker_heartbeat_age_s"] > 120
    async with db.write(engine) as conn:
        await samples.insert(conn, [samples.Sample(name, value) for name, value in found.items()], later)
    await ensure_default_rules(engine, [])
    metrics = Metrics()
    notifier = Notifier(
        {}, outbound=OutboundPolicy(), metrics=metrics, attempts=1, timeout_s=1, breaker_failures=1, cooldown_s=1
    )
    lease = Lease(EVALUATOR, "test")
    assert await acquire(engine, lease.name, lease.owner, ttl_s=60)
    try:
        fired = await Evaluator(engine, notifier, metrics, RETENTION).step(lease, later)
    finally:
        await notifier.aclose()
    assert [(t.event, t.rule.name) for t in fired] == [("firing", "no worker heartbeat")]
