"""RabbitMQ: a durable topic exchange `<topic>.events`, routing key = the event type (`job.succeeded`),
persistent messages with publisher confirms. A durable queue of the same name, bound to everything and
capped at `max_events` (oldest dropped), keeps the events for consumers that bind later and gives every
message a route; messages are published `mandatory`, so one the broker cannot route (the queue or its
binding was removed) comes back, and it is refused, as is one the broker nacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from inferline.errors import BrokerUnavailable
from inferline.events.broker import Message
from inferline.events.envelope import CONTENT_TYPE

_DOWN = (TimeoutError, OSError, aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError)


def exchange_name(topic: str) -> str:
    return f"{topic}.events"


class RabbitMqBroker:
    name = "rabbitmq"

    def __init__(self, url: str, *, topic: str, max_events: int, timeout_s: float) -> None:
        self.url = url
        self.name = exchange_name(topic)
        self.max_events = max_events
        self.timeout_s = timeout_s
        self._connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None

    async def _connect(self) -> Any:
        if self._exchange is not None and not self._channel.is_closed:
            return self._exchange
        await self.aclose()
        try:
            async with asyncio.timeout(self.timeout_s):
                self._connection = await aio_pika.connect(self.url, timeout=self.timeout_s)
                self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=False)
                exchange = await self._channel.declare_exchange(self.name, aio_pika.ExchangeType.TOPIC, durable=True)
                queue = await self._channel.declare_queue(
                    self.name,
                    durable=True,
                    arguments={"x-max-length": self.max_events, "x-overflow": "drop-head"},
                )
                await queue.bind(exchange, routing_key="#")
        except (*_DOWN, aio_pika.exceptions.AMQPError) as exc:
            await self.aclose()
            raise BrokerUnavailable(f"RabbitMQ at {_safe(self.url)}: {type(exc).__name__}: {exc}") from exc
        self._exchange = exchange
        return exchange

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        exchange = await self._connect()
        try:
            async with asyncio.timeout(self.timeout_s):
                channel = await self._channel.get_underlay_channel()
                # Tasks made in order take the channel's lock in order (it is FIFO): frames go out in order.
                sends = [asyncio.ensure_future(self._send(channel, exchange.name, m)) for m in messages]
                answers = await asyncio.gather(*sends, return_exceptions=True)
        except _DOWN as exc:
            await self.aclose()
            raise BrokerUnavailable(f"RabbitMQ at {_safe(self.url)}: {type(exc).__name__}: {exc}") from exc
        return [self._answer(answer) for answer in answers]

    @staticmethod
    async def _send(channel: Any, exchange: str, message: Message) -> Any:
        properties = aio_pika.Message(
            message.body,
            message_id=message.id,
            content_type=CONTENT_TYPE,
            type=message.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ).properties
        return await channel.basic_publish(
            message.body, exchange=exchange, routing_key=message.type, properties=properties, mandatory=True, wait=False
        )

    def _answer(self, answer: Any) -> str | None:
        if isinstance(answer, Basic.Ack):
            return None
        if isinstance(answer, DeliveredMessage):
            text = getattr(answer.delivery, "reply_text", "unroutable")
            return f"RabbitMQ returned it: {text} (no queue is bound for {answer.routing_key})"
        if isinstance(answer, Basic.Nack):
            return "RabbitMQ refused it (nack)"
        if isinstance(answer, aiormq.exceptions.DeliveryError):
            return f"RabbitMQ refused it: {answer}"
        if isinstance(answer, BaseException):
            raise BrokerUnavailable(f"RabbitMQ at {_safe(self.url)}: {type(answer).__name__}: {answer}") from answer
        return f"RabbitMQ answered {type(answer).__name__}"

    async def tail(self, types: Sequence[str]) -> AsyncIterator[bytes]:
        exchange = await self._connect()
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for pattern in types or ["#"]:
            await queue.bind(exchange, routing_key=pattern.replace(">", "#"))
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                yield message.body

    async def aclose(self) -> None:
        connection: AbstractRobustConnection | None = self._connection
        self._connection = self._channel = self._exchange = None
        if connection is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await connection.close()
            except (*_DOWN, aio_pika.exceptions.AMQPError):
                pass


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{host}" if at else url
