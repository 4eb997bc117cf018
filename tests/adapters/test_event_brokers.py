"""The publisher and each broker adapter against the real server: events come back in order as CloudEvents,
a refused event is dead-lettered, an unreachable broker loses nothing; plus the election and the outbox
bound, with the in-package memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from nats.js.api import StreamConfig
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.event_brokers import RealBroker, outbox_events
from tests.helpers import eventually

from inferline import db, leases
from inferline.clock import utcnow
from inferline.errors import BrokerUnavailable
from inferline.events import outbox, service, store
from inferline.events.broker import Broker, MemoryBroker, Message
from inferline.events.nats import stream_name
from inferline.events.publisher import LEASE, Publisher, PublisherConfig
from inferline.events.rabbitmq import exchange_name
from inferline.events.redis import RedisBroker, stream_key
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.service import claim_jobs
from inferline.jobs.submission import JobRequest, Submitter
from inferline.metrics import Metrics
from inferline.schema import event_dead_letters

ECHO = {"message": "x", "steps": 0}


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def events_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite and MariaDB (PostgreSQL's outbox SQL is checked in test_event_outbox.py; MariaDB's differs:
    no `LIMIT` in an `IN` subquery, no `UPDATE … RETURNING`)."""
    if request.param == "mariadb":
        url: str = request.getfixturevalue("mariadb_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
async def engine(events_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine of `events_url` with events on."""
    url = events_url
    db.upgrade(url)
    engine = db.create_engine(url)
    engine.update_execution_options(**{outbox.EVENTS_OPTION: True})
    yield engine
    await engine.dispose()


async def submit(engine: AsyncEngine, count: int, tenant: str = "acme") -> list[str]:
    registry = KindRegistry()
    register_echo(registry)
    submitter = Submitter(engine, registry, default_max_attempts=1)
    return [(await submitter.submit(JobRequest("echo", ECHO), tenant=tenant))[0].id for _ in range(count)]


async def outbox_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The outbox's events, in order (each with its row's seq and sent_at)."""
    return await outbox_events(engine)


async def dead_letters(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with db.read(engine) as conn:
        return [dict(r) for r in (await conn.execute(sa.select(event_dead_letters))).mappings()]


async def elected(engine: AsyncEngine, broker: Broker, **config: Any) -> tuple[Publisher, leases.Lease]:
    lease = leases.Lease(LEASE, "test")
    assert await leases.acquire(engine, LEASE, lease.owner, ttl_s=60)
    return Publisher(engine, broker, Metrics(), PublisherConfig(topic="t", **config)), lease


async def test_published_events_come_back_from_the_broker_in_order_as_cloud_events(
    engine: AsyncEngine, real_broker: RealBroker
) -> None:
    jobs = await submit(engine, 3)
    await claim_jobs(engine, owner="w", kinds=["echo"], limit=1, lease_s=30, kind_limits={})
    broker = real_broker.adapter()
    try:
        publisher, lease = await elected(engine, broker, batch=2)  # two batches and a half
        publisher.source = f"/inferline/{real_broker.topic}"
        assert await publisher.step(lease) == 4
    finally:
        await broker.aclose()
    rows = await outbox_rows(engine)
    kept = await real_broker.kept()
    assert [event["id"] for event in kept] == [row["id"] for row in rows]
    assert all(row["sent_at"] is not None for row in rows)
    first, running = kept[0], kept[3]
    assert first["specversion"] == "1.0" and first["source"] == f"/inferline/{real_broker.topic}"
    assert first["type"] == "dev.inferline.job.queued" and first["subject"] == jobs[0]
    assert first["datacontenttype"] == "application/json" and first["tenant"] == "acme"
    assert first["time"] == rows[0]["time"].isoformat() and first["sequence"] == f"{rows[0]['seq']:015d}00000"
    assert [event["sequence"] for event in kept] == sorted(event["sequence"] for event in kept)
    assert first["data"]["id"] == jobs[0] and first["data"]["status"] == "queued"
    assert running["type"] == "dev.inferline.job.running" and running["data"]["status"] == "running"


async def refuse_everything(real_broker: RealBroker) -> None:
    """Make the real server refuse this topic's events, each in its own way."""
    if real_broker.kind == "nats":  # a stream whose messages must be tiny: JetStream nacks the rest
        nc = await nats.connect(real_broker.url)
        config = StreamConfig(name=stream_name(real_broker.topic), subjects=[f"{real_broker.topic}.>"], max_msg_size=64)
        await nc.jetstream().update_stream(config)  # made by the fixture's reachability check
        await nc.close()
    elif real_broker.kind == "redis":  # the stream's key holds a string: WRONGTYPE
        client = aioredis.from_url(real_broker.url)
        await client.set(stream_key(real_broker.topic), "not a stream")
        await client.aclose()
    else:  # the queue is gone after the adapter set it up: mandatory messages come back unroutable
        import aio_pika

        connection = await aio_pika.connect(real_broker.url)
        async with connection:
            await (await connection.channel()).queue_delete(exchange_name(real_broker.topic))


async def fix_everything(real_broker: RealBroker) -> None:
    if real_broker.kind == "nats":
        nc = await nats.connect(real_broker.url)
        config = StreamConfig(name=stream_name(real_broker.topic), subjects=[f"{real_broker.topic}.>"], max_msg_size=-1)
        await nc.jetstream().update_stream(config)
        await nc.close()
    elif real_broker.kind == "redis":
        client = aioredis.from_url(real_broker.url)
        await client.delete(stream_key(real_broker.topic))
        await client.aclose()
    else:
        import aio_pika

        connection = await aio_pika.connect(real_broker.url)
        async with connection:
            channel = await connection.channel()
            name = exchange_name(real_broker.topic)
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-max-length": 10_000, "x-overflow": "drop-head"}
            )
            await queue.bind(name, routing_key="#")


async def test_an_event_the_broker_refuses_is_dead_lettered_and_a_retry_sends_it(
    engine: AsyncEngine, real_broker: RealBroker
) -> None:
    [job] = await submit(engine, 1)
    broker = real_broker.adapter()
    if real_broker.kind == "rabbitmq":
        await broker.publish([])  # declares the exchange and its queue, which the test then removes
    await refuse_everything(real_broker)
    try:
        publisher, lease = await elected(engine, broker)
        assert await publisher.step(lease) == 0
        [letter] = await dead_letters(engine)
        assert letter["subject"] == job and letter["type"] == "job.queued"
        assert letter["reason"].startswith(("NATS refused", "Redis refused", "RabbitMQ returned")), letter["reason"]
        assert [row["sent_at"] is not None for row in await outbox_rows(engine)] == [True]  # handled
        await fix_everything(real_broker)  # the retry goes out with the next step
        await service.retry_dead_letter(engine, letter["id"])
        assert await publisher.step(lease) == 1
    finally:
        await broker.aclose()
    assert [event["id"] for event in await real_broker.kept()] == [letter["id"]]
    assert await dead_letters(engine) == []


@pytest.mark.redis
async def test_a_broker_down_keeps_the_events_and_publishing_resumes_by_itself_in_order(
    engine: AsyncEngine, redis_broker: RealBroker
) -> None:
    real_broker = redis_broker  # one broker shows the publisher's handling of an outage
    await submit(engine, 5)
    down = RedisBroker("redis://127.0.0.1:1/0", topic=real_broker.topic, max_events=100, timeout_s=1)
    metrics = Metrics()
    config = PublisherConfig(topic=real_broker.topic, batch=2, poll_s=0.02, max_backoff_s=0.1, maintain_s=0)
    publisher = Publisher(engine, down, metrics, config)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        await eventually(lambda: metrics.events_publish_failures.labels(broker="redis")._value.get(), lambda n: n >= 2)
        assert all(row["sent_at"] is None for row in await outbox_rows(engine))
        await submit(engine, 3)  # state changes still commit while the broker is away
        publisher.broker = real_broker.adapter()  # the broker is back
        await eventually(lambda: outbox_rows(engine), lambda rows: all(row["sent_at"] for row in rows), timeout_s=5)
    finally:
        stop.set()
        await task
        await publisher.broker.aclose()
        await down.aclose()
    assert [event["id"] for event in await real_broker.kept()] == [row["id"] for row in await outbox_rows(engine)]
    assert metrics.events_outbox_rows._value.get() == 0


@pytest.mark.mariadb_too
async def test_two_publishers_on_one_database_only_one_publishes(database_url: str) -> None:
    url = database_url
    db.upgrade(url)
    engines = [db.create_engine(url) for _ in range(2)]
    engines[0].update_execution_options(**{outbox.EVENTS_OPTION: True})
    brokers = [MemoryBroker(), MemoryBroker()]
    config = PublisherConfig(topic="t", poll_s=0.02)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(Publisher(e, b, Metrics(), config).run(stop)) for e, b in zip(engines, brokers, strict=True)
    ]
    try:
        await submit(engines[0], 10)
        await eventually(lambda: sum(len(b.sent) for b in brokers), lambda n: n >= 10)
        await asyncio.sleep(0.1)  # both had their turns to look
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for e in engines:
            await e.dispose()
    assert sorted(len(b.sent) for b in brokers) == [0, 10]


async def test_past_the_bound_the_newest_events_wait_as_dead_letters_and_the_oldest_stay(engine: AsyncEngine) -> None:
    await submit(engine, 5)
    oldest = [row["id"] for row in await outbox_rows(engine)][:3]
    publisher, lease = await elected(engine, MemoryBroker(down=True), max_rows=3)
    await publisher.step(lease)
    assert [row["id"] for row in await outbox_rows(engine)] == oldest
    letters = await dead_letters(engine)
    assert len(letters) == 2 and all("events_outbox_max_rows" in letter["reason"] for letter in letters)
    assert publisher.metrics.events_outbox_rows._value.get() == 3


async def test_an_event_over_the_size_limit_is_dead_lettered_without_a_send(engine: AsyncEngine) -> None:
    await submit(engine, 1)
    broker = MemoryBroker()
    publisher, lease = await elected(engine, broker, max_bytes=100)
    assert await publisher.step(lease) == 0
    assert broker.sent == [] and "over events_max_bytes" in (await dead_letters(engine))[0]["reason"]


async def test_sent_rows_past_their_retention_are_pruned_oldest_first_and_unsent_ones_kept(
    engine: AsyncEngine,
) -> None:
    await submit(engine, 3)
    publisher, lease = await elected(engine, MemoryBroker())
    assert await publisher.step(lease) == 3
    await submit(engine, 1)  # unsent, and older than the cutoff too
    seqs = [row["seq"] for row in await outbox_rows(engine)]
    async with db.write(engine) as conn:
        assert await store.prune_sent(conn, utcnow() + timedelta(seconds=60), limit=2) == 2
    assert [row["seq"] for row in await outbox_rows(engine)] == seqs[2:]
    async with db.write(engine) as conn:
        assert await store.prune_sent(conn, utcnow() + timedelta(seconds=60), limit=10) == 1
    [left] = await outbox_rows(engine)
    assert left["seq"] == seqs[3] and left["sent_at"] is None


class FailsOnSecondTrip(MemoryBroker):
    """Takes the first round trip, then is unreachable."""

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        if self.sent:
            raise BrokerUnavailable("gone after the first round trip")
        return await super().publish(messages)


async def test_a_row_is_marked_sent_only_when_every_event_of_it_was_answered(engine: AsyncEngine) -> None:
    ids = await submit(engine, 3)
    await claim_jobs(engine, owner="w", kinds=["echo"], limit=3, lease_s=30, kind_limits={})  # one row, 3 events
    flaky = FailsOnSecondTrip()
    publisher, lease = await elected(engine, flaky, batch=2)
    assert await publisher.step(lease) == 0  # 2 of the 5 events went out, then the broker failed
    assert [m.type for m in flaky.sent] == ["job.queued", "job.queued"]
    assert all(row["sent_at"] is None for row in await outbox_rows(engine))
    broker = MemoryBroker()
    publisher.broker, publisher._resume_at = broker, 0.0
    assert await publisher.step(lease) == 6  # everything again, in order: consumers dedupe the two by id
    assert [m.id for m in broker.sent] == [row["id"] for row in await outbox_rows(engine)]
    assert [m.type for m in broker.sent] == ["job.queued"] * 3 + ["job.running"] * 3
    assert {m.id for m in flaky.sent} <= {m.id for m in broker.sent} and len(ids) == 3
