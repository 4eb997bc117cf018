"""The real brokers of the events tests: a reachable server per kind (skipped without one, failed with
INFERLINE_REQUIRE_SERVICES=1), a topic of each test's own, and a reader of what the broker kept."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import nats
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.events import envelope
from inferline.events.broker import Broker
from inferline.events.nats import NatsBroker, stream_name
from inferline.events.rabbitmq import RabbitMqBroker, exchange_name
from inferline.events.redis import RedisBroker, stream_key
from inferline.schema import event_outbox

URLS = {
    "nats": os.environ.get("INFERLINE_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "redis": os.environ.get("INFERLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "rabbitmq": os.environ.get("INFERLINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}
KINDS = [pytest.param(kind, marks=getattr(pytest.mark, kind)) for kind in URLS]


@dataclass
class RealBroker:
    kind: str
    url: str
    topic: str

    def adapter(self, *, max_events: int = 10_000, timeout_s: float = 5.0) -> Broker:
        cls = {"nats": NatsBroker, "redis": RedisBroker, "rabbitmq": RabbitMqBroker}[self.kind]
        return cls(self.url, topic=self.topic, max_events=max_events, timeout_s=timeout_s)  # type: ignore[no-any-return]

    async def kept(self) -> list[dict[str, Any]]:
        """Every event the broker keeps for this topic, in its order."""
        return [json.loads(body) for body in await getattr(self, f"_kept_{self.kind}")()]

    async def _kept_nats(self) -> list[bytes]:
        nc = await nats.connect(self.url, connect_timeout=2)
        try:
            js = nc.jetstream(timeout=2)
            state = (await js.stream_info(stream_name(self.topic))).state
            return [
                (await js.get_msg(stream_name(self.topic), seq)).data or b""
                for seq in range(state.first_seq, state.last_seq + 1)
                if state.messages
            ]
        finally:
            await nc.close()

    async def _kept_redis(self) -> list[bytes]:
        client = aioredis.from_url(self.url)
        try:
            return [fields[b"event"] for _, fields in await client.xrange(stream_key(self.topic))]
        finally:
            await client.aclose()

    async def _kept_rabbitmq(self) -> list[bytes]:
        connection = await aio_pika.connect(self.url, timeout=2)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exchange_name(self.topic), passive=True)
            bodies = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                bodies.append(message.body)
            return bodies

    async def reachable(self) -> None:
        """Raises when the server does not answer."""
        if self.kind == "redis":  # an empty pipeline never connects
            client = aioredis.from_url(self.url, socket_connect_timeout=2)
            try:
                await client.ping()
            finally:
                await client.aclose()
            return
        broker = self.adapter(timeout_s=2)
        try:
            await broker.publish([])
        finally:
            await broker.aclose()

    async def clean(self) -> None:
        with contextlib.suppress(Exception):
            if self.kind == "nats":
                nc = await nats.connect(self.url, connect_timeout=2)
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_stream(stream_name(self.topic))
                await nc.close()
            elif self.kind == "redis":
                client = aioredis.from_url(self.url)
                await client.delete(stream_key(self.topic))
                await client.aclose()
            else:
                connection = await aio_pika.connect(self.url, timeout=2)
                async with connection:
                    channel = await connection.channel()
                    await channel.queue_delete(exchange_name(self.topic))
                    await channel.exchange_delete(exchange_name(self.topic))


async def reachable(kind: str) -> RealBroker:
    """The server of `kind` with a fresh topic; skips (fails with INFERLINE_REQUIRE_SERVICES=1) without one.
    The caller cleans up (`RealBroker.clean`)."""
    broker = RealBroker(kind, URLS[kind], f"t{uuid.uuid4().hex[:12]}")
    try:
        await broker.reachable()
    except Exception as exc:
        if os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{broker.kind} at {broker.url} is required (INFERLINE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"{broker.kind} not reachable at {broker.url}: {exc}")
    return broker


@contextlib.asynccontextmanager
async def real(kind: str) -> AsyncIterator[RealBroker]:
    broker = await reachable(kind)
    try:
        yield broker
    finally:
        await broker.clean()


async def outbox_events(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every event in the outbox, in order, as columns (`envelope.parse`) with its row's `seq`, its
    `index` in the row, and the row's `sent_at`."""
    async with db.read(engine) as conn:
        rows = (await conn.execute(sa.select(event_outbox).order_by(event_outbox.c.seq))).mappings().all()
    return [
        envelope.parse(line) | {"seq": row["seq"], "index": index, "sent_at": row["sent_at"]}
        for row in rows
        for index, line in enumerate(envelope.lines(row["payload"]))
    ]
