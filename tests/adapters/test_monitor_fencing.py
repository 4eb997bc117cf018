"""Fencing of the elected loops: a holder that outlived its lease writes nothing, a step cannot outlive
its lease, expiry is the database's clock, and the keys that stop a second writer's duplicates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, leases
from inferline.errors import LeaseLost
from inferline.metrics import Metrics
from inferline.monitor import sampler, samples
from inferline.monitor.evaluator import LEASE as EVALUATOR
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.notifier import Notifier
from inferline.monitor.rules import RuleIn, create_rule
from inferline.monitor.samples import HOUR, MINUTE, RAW, Sample
from inferline.outbound import OutboundPolicy
from inferline.schema import alerts, metric_samples

RETENTION = {RAW: 86_400.0, MINUTE: 7 * 86_400.0, HOUR: 365 * 86_400.0}


@pytest.fixture
async def other(engine: AsyncEngine, database_url: str) -> AsyncIterator[AsyncEngine]:
    """A second process's connection pool on the same database."""
    second = db.create_engine(database_url)
    yield second
    await second.dispose()


async def replaced(first: AsyncEngine, second: AsyncEngine, name: str) -> tuple[leases.Lease, leases.Lease]:
    """`a` took lease `name` and paused past its TTL; `b` holds it now."""
    a, b = leases.Lease(name, "a"), leases.Lease(name, "b")
    assert await leases.acquire(first, name, a.owner, ttl_s=0.2)
    await asyncio.sleep(0.3)
    assert await leases.acquire(second, name, b.owner, ttl_s=60)
    return a, b


async def count(engine: AsyncEngine, query: sa.Select[tuple[int]]) -> int:
    async with db.read(engine) as conn:
        return int(await conn.scalar(query) or 0)


async def test_a_replaced_sampler_writes_no_samples_and_no_rollups(
    engine: AsyncEngine, other: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    async with db.write(engine) as conn:
        for second in (0, 20, 40):
            await samples.insert(
                conn, [Sample("cpu_percent", float(second))], now - timedelta(minutes=2, seconds=-second)
            )
    config = sampler.SamplerConfig(sample_s=15, presence_s=15, retention_s=RETENTION)
    first = sampler.Sampler(engine, Metrics(), tmp_path, config)
    second = sampler.Sampler(other, Metrics(), tmp_path, config)
    a, b = await replaced(engine, other, sampler.LEASE)
    with pytest.raises(LeaseLost):
        await first.maintain(a, now)
    await second.maintain(b, now)
    with pytest.raises(LeaseLost):  # both read `newest` before either wrote: the first would double it
        await first.maintain(a, now)
    with pytest.raises(LeaseLost):
        await first.sample(a, now)
    m = metric_samples
    assert await count(engine, sa.select(sa.func.count()).where(m.c.resolution_s == MINUTE)) == 1
    raw = sa.select(sa.func.count()).where(m.c.resolution_s == RAW, m.c.at == now)
    assert await count(engine, raw) == 0


async def test_a_replaced_evaluator_opens_no_alert_and_sends_nothing(engine: AsyncEngine, other: AsyncEngine) -> None:
    metrics = Metrics()
    notifier = Notifier(
        {}, outbound=OutboundPolicy(), metrics=metrics, attempts=1, timeout_s=1, breaker_failures=1, cooldown_s=1
    )
    rule = RuleIn(name="deep", metric="queue_depth", comparator="gt", threshold=1, window_s=60)
    await create_rule(engine, rule, channels={})
    now = datetime.now(UTC)
    async with db.write(engine) as conn:
        await samples.insert(conn, [Sample("queue_depth", 5.0, {"kind": "ocr", "status": "queued"})], now)
    first = Evaluator(engine, notifier, metrics, RETENTION)
    second = Evaluator(other, notifier, metrics, RETENTION)
    a, b = await replaced(engine, other, EVALUATOR)
    try:
        with pytest.raises(LeaseLost):
            await first.step(a, now)
        assert await count(engine, sa.select(sa.func.count()).select_from(alerts)) == 0
        assert [t.event for t in await second.step(b, now)] == ["firing"]  # for_s 0: at once
        assert await second.step(b, now) == []
    finally:
        await notifier.aclose()
    assert await count(engine, sa.select(sa.func.count()).select_from(alerts)) == 1


async def test_a_step_never_outlives_its_lease(engine: AsyncEngine, other: AsyncEngine) -> None:
    """A step past the TTL would let a second process in while the first still writes."""
    running: list[str] = []
    overlaps: list[list[str]] = []
    stops = [asyncio.Event(), asyncio.Event()]

    def loop(owner: str, on: AsyncEngine, stop: asyncio.Event) -> asyncio.Task[None]:
        async def slow(_lease: leases.Lease) -> None:
            running.append(owner)
            if len(running) > 1:
                overlaps.append(list(running))
            try:
                await asyncio.sleep(5)  # far past the 0.5 s TTL
            finally:
                running.remove(owner)

        return asyncio.create_task(
            leases.run_elected(on, "slow", slow, every_s=0.05, stop=stop, owner=owner, ttl_s=0.5)
        )

    tasks = [loop("a", engine, stops[0]), loop("b", other, stops[1])]
    await asyncio.sleep(2)
    for stop in stops:
        stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert overlaps == []


@pytest.mark.postgres
async def test_lease_expiry_is_the_databases_clock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose clock runs ahead by more than the TTL does not see a held lease as expired."""
    db.upgrade(pg_url)
    engine = db.create_engine(pg_url)
    try:
        assert await leases.acquire(engine, "clock", "a", ttl_s=30)
        monkeypatch.setattr(leases, "utcnow", lambda: datetime.now(UTC) + timedelta(minutes=5))
        assert not await leases.acquire(engine, "clock", "b", ttl_s=30)
        assert await leases.holder(engine, "clock") == "a"
    finally:
        await engine.dispose()


def rollup_row(at: datetime, state: str = "") -> dict[str, object]:
    return {
        "name": "cpu_percent", "labels": "{}", "tenant": "", "resolution_s": MINUTE, "at": at,
        "value": 1.0, "min_value": 1.0, "max_value": 1.0, "samples": 1,
    }  # fmt: skip


def alert_row(alert_id: str, state: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "id": alert_id, "rule_id": "r", "rule_name": "r", "series": "{}", "state": state, "severity": "warning",
        "value": 1.0, "started_at": now, "updated_at": now,
    }  # fmt: skip


async def test_one_rollup_row_per_bucket_and_one_open_alert_per_series(engine: AsyncEngine) -> None:
    at = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    async with db.write(engine) as conn:
        await samples.insert(conn, [Sample("cpu_percent", 1.0)] * 2, at)  # raw rows have no such key
        await conn.execute(metric_samples.insert(), [rollup_row(at)])
    with pytest.raises(sa.exc.IntegrityError):
        async with db.write(engine) as conn:
            await conn.execute(metric_samples.insert(), [rollup_row(at)])
    async with db.write(engine) as conn:
        await conn.execute(alerts.insert(), [alert_row("1", "resolved"), alert_row("2", "resolved")])
        await conn.execute(alerts.insert(), [alert_row("3", "pending")])
    with pytest.raises(sa.exc.IntegrityError):
        async with db.write(engine) as conn:
            await conn.execute(alerts.insert(), [alert_row("4", "firing")])
