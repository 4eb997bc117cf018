"""Redis Streams: every event is an entry of stream `<topic>:events` (fields `id`, `type`, `event`),
appended with XADD capped near `max_events` (`MAXLEN ~`: Redis trims whole nodes, cheaply). A batch is one
pipeline, so one round trip, in order; an entry Redis answers with an error (the key holds another type,
the server is out of memory) is that event's refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from inferline.errors import BrokerUnavailable
from inferline.events.broker import Message, type_matches

# Replies that say the server cannot serve now, not that it refuses the entry.
_TRANSIENT = ("LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def stream_key(topic: str) -> str:
    return f"{topic}:events"


class RedisBroker:
    name = "redis"

    def __init__(self, url: str, *, topic: str, max_events: int, timeout_s: float) -> None:
        self.url = url
        self.key = stream_key(topic)
        self.max_events = max_events
        self.timeout_s = timeout_s
        self.client: Any = aioredis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry_on_timeout=False
        )

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            fields = {"id": message.id, "type": message.type, "event": message.body}
            pipe.xadd(self.key, fields, maxlen=self.max_events, approximate=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await pipe.execute(raise_on_error=False)
        except (TimeoutError, OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url}: {type(exc).__name__}: {exc}") from exc
        answers: list[str | None] = []
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                if str(reply).startswith(_TRANSIENT):
                    raise BrokerUnavailable(f"Redis at {self.url}: {reply}")
                answers.append(f"Redis refused it: {reply}")
            else:
                answers.append(None)
        return answers

    async def tail(self, types: Sequence[str]) -> AsyncIterator[bytes]:
        last = "$"
        while True:
            replies = await self.client.xread({self.key: last}, count=100, block=1000)
            for _stream, entries in replies:
                for entry_id, fields in entries:
                    last = entry_id
                    if type_matches(types, fields[b"type"].decode()):
                        yield fields[b"event"]

    async def aclose(self) -> None:
        await self.client.aclose()
