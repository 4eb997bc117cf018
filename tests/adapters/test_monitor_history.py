"""The metrics history and the alert evaluator on both engines: rollups, retention, and one series'
alert through pending, firing (notified, then throttled) and resolved."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.api.test_webhooks import Receiver

from inferline import db
from inferline.jobs.webhooks import new_secret, verify
from inferline.leases import Lease, acquire
from inferline.metrics import Metrics
from inferline.monitor import samples
from inferline.monitor.channels import WebhookChannel
from inferline.monitor.evaluator import LEASE as EVALUATOR
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.history import list_alerts
from inferline.monitor.notifier import Notifier
from inferline.monitor.rules import RuleIn, create_rule, ensure_default_rules, list_rules
from inferline.monitor.samples import HOUR, MINUTE, RAW, Sample
from inferline.monitor.series import read_series
from inferline.outbound import OutboundPolicy
from inferline.schema import metric_samples

RETENTION = {RAW: 86_400.0, MINUTE: 7 * 86_400.0, HOUR: 365 * 86_400.0}
T0 = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)


async def write(engine: AsyncEngine, at: datetime, *batch: Sample) -> None:
    async with db.write(engine) as conn:
        await samples.insert(conn, batch, at)


async def rows(engine: AsyncEngine, resolution: int) -> list[tuple[datetime, float, float, float, int]]:
    m = metric_samples
    query = sa.select(m.c.at, m.c.value, m.c.min_value, m.c.max_value, m.c.samples).where(
        m.c.resolution_s == resolution
    )
    async with db.read(engine) as conn:
        return [tuple(row) for row in await conn.execute(query.order_by(m.c.at))]  # type: ignore[misc]


async def test_raw_samples_fold_into_minutes_then_hours_and_age_out(engine: AsyncEngine) -> None:
    for second, value in ((0, 1.0), (20, 2.0), (40, 6.0), (60, 10.0), (3600, 5.0)):
        await write(engine, T0 + timedelta(seconds=second), Sample("cpu_percent", value))
    async with db.write(engine) as conn:
        await samples.rollup(conn, source_s=RAW, target_s=MINUTE, until=T0 + timedelta(hours=2), max_span_s=HOUR)
    # One hour per call: the minute of 10:00 waits for the next call.
    assert await rows(engine, MINUTE) == [(T0, 3.0, 1.0, 6.0, 3), (T0 + timedelta(minutes=1), 10.0, 10.0, 10.0, 1)]
    async with db.write(engine) as conn:
        await samples.rollup(conn, source_s=RAW, target_s=MINUTE, until=T0 + timedelta(hours=2), max_span_s=HOUR)
        await samples.rollup(conn, source_s=MINUTE, target_s=HOUR, until=T0 + timedelta(hours=2), max_span_s=24 * HOUR)
    assert len(await rows(engine, MINUTE)) == 3
    assert await rows(engine, HOUR) == [(T0, 4.75, 1.0, 10.0, 4), (T0 + timedelta(hours=1), 5.0, 5.0, 5.0, 1)]
    async with db.write(engine) as conn:
        removed = await samples.prune(conn, {RAW: 1800.0, MINUTE: 86_400.0}, T0 + timedelta(hours=1, minutes=1))
    assert removed == 4 and len(await rows(engine, RAW)) == 1 and len(await rows(engine, HOUR)) == 2


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


async def test_an_alert_goes_pending_firing_and_resolved_and_notifies(engine: AsyncEngine, receiver: Receiver) -> None:
    secret = new_secret()
    channels = {"hook": WebhookChannel(type="webhook", url=f"http://127.0.0.1:{receiver.port}/", secret=secret)}
    outbound = OutboundPolicy(allow_networks=[ipaddress.ip_network("127.0.0.0/8")])
    metrics = Metrics()
    notifier = Notifier(
        channels, outbound=outbound, metrics=metrics, attempts=1, timeout_s=2, breaker_failures=3, cooldown_s=60
    )
    evaluator = Evaluator(engine, notifier, metrics, RETENTION)
    rule = RuleIn(
        name="deep queue", metric="queue_depth", labels={"status": "queued"}, comparator="gt", threshold=10,
        window_s=60, for_s=30, channels=["hook"], repeat_s=600,
    )  # fmt: skip
    await create_rule(engine, rule, channels=channels)
    lease = Lease(EVALUATOR, "test")
    assert await acquire(engine, lease.name, lease.owner, ttl_s=60)
    ocr, echo = {"kind": "ocr", "status": "queued"}, {"kind": "echo", "status": "queued"}
    now = datetime.now(UTC)

    async def step(at: datetime, ocr_depth: float) -> list[str]:
        await write(engine, at, Sample("queue_depth", ocr_depth, ocr), Sample("queue_depth", 1.0, echo))
        return [f"{t.event}:{t.alert['state']}" for t in await evaluator.step(lease, at)]

    try:
        assert await step(now, 50) == []  # pending
        [pending] = (await list_alerts(engine, state="pending", rule_id=None, limit=10, cursor=None))[0]
        assert pending["labels"] == ocr and pending["value"] == 50
        assert await step(now + timedelta(seconds=31), 60) == ["firing:firing"]
        assert await step(now + timedelta(seconds=40), 60) == []  # throttled by repeat_s
        assert await step(now + timedelta(seconds=632), 60) == ["firing:firing"]  # repeated
        # The window still holds 60s: the last value decides (aggregation "last").
        assert await step(now + timedelta(seconds=640), 3) == ["resolved:resolved"]
        await notifier.wait_sent()
    finally:
        await notifier.aclose()
    events = [json.loads(body)["type"] for headers, body in receiver.requests if verify(secret, headers, body)]
    assert events == ["alert.firing", "alert.firing", "alert.resolved"]
    items, _ = await list_alerts(engine, state=None, rule_id=None, limit=10, cursor=None)
    assert [(a["state"], a["labels"]["kind"]) for a in items] == [("resolved", "ocr")]
    assert items[0]["fired_at"] is not None and items[0]["resolved_at"] is not None


async def test_built_in_rules_are_made_once_and_keep_an_admins_edits(engine: AsyncEngine) -> None:
    assert await ensure_default_rules(engine, ["ops"]) == 5
    assert await ensure_default_rules(engine, ["ops"]) == 0
    names = {rule.name: rule for rule in await list_rules(engine)}
    assert set(names) == {
        "queue growing", "job failure ratio over 10%", "no worker heartbeat", "disk under 10% free", "model down"
    }  # fmt: skip
    assert all(rule.builtin and rule.channels == ["ops"] for rule in names.values())


async def test_a_read_sums_buckets_in_the_database_and_fills_the_newest_from_finer_rows(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=10)
    ocr, echo = {"kind": "ocr", "status": "queued"}, {"kind": "ocr", "status": "running"}
    for second in range(0, int((now - start).total_seconds()), 5):  # every 5 s up to now
        at = start + timedelta(seconds=second)
        value = 1.0 if at < start + timedelta(minutes=5) else 3.0
        await write(engine, at, Sample("queue_depth", value, ocr), Sample("queue_depth", 9.0, echo))
    async with db.write(engine) as conn:  # minutes rolled up for the first 5 minutes only
        await samples.rollup(conn, source_s=RAW, target_s=MINUTE, until=start + timedelta(minutes=5), max_span_s=HOUR)
    page = await read_series(
        engine, name="queue_depth", labels={"status": "queued"}, since=start, step_s=60, tenant="", admin=True,
        retention_s=RETENTION,
    )  # fmt: skip
    assert page.resolution_s == MINUTE
    [series] = page.series
    assert series.labels == ocr
    assert [value for _, value in series.points] == [1.0] * 5 + [3.0] * (len(series.points) - 5)
    assert len(series.points) >= 10  # the 5 minutes past the rollup come from raw samples
    assert [at for at, _ in series.points] == sorted({at for at, _ in series.points})
    assert all(at % 60 == 0 for at, _ in series.points)
