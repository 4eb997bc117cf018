"""Redis Streams: every event is an entry of stream `<topic>:events` (fields `id`, `type`, `event`),
appended with XADD capped near `max_events` (`MAXLEN ~`: Redis trims whole nodes, cheaply). A batch is one
command, so one round trip, in order: a Lua script (`_APPEND`) that XADDs each event and answers only the
refusals, as (index, error) pairs; an XADD Redis answers with an error (the key holds another type, the
server is out of memory) is that event's refusal. One command instead of a pipeline of one per event:
redis-py spends about 30 µs packing each command and reading each reply, which was most of the
publisher's cost per event (docs/benchmarks.md)."""

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

# KEYS[1]: the stream; ARGV[1]: the cap; then (id, type, event) per event. Answers a flat list
# [index, error, index, error...] of the entries Redis refused (0-based), empty when it took them all.
_APPEND = """
local refused = {}
for i = 2, #ARGV, 3 do
  local reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                            'id', ARGV[i], 'type', ARGV[i + 1], 'event', ARGV[i + 2])
  if type(reply) == 'table' and reply.err then
    refused[#refused + 1] = (i - 2) / 3
    refused[#refused + 1] = reply.err
  end
end
return refused
"""


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
        self.append: Any = self.client.register_script(_APPEND)  # EVALSHA, loaded on first NOSCRIPT

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        if not messages:
            return []
        args: list[str | bytes | int] = [self.max_events]
        for message in messages:
            args += (message.id, message.type, message.body)
        try:
            async with asyncio.timeout(self.timeout_s):
                refused = await self.append(keys=[self.key], args=args)
        except redis.exceptions.ResponseError as exc:  # the script did not run: nothing is known sent
            raise BrokerUnavailable(f"Redis at {self.url}: {exc}") from exc
        except (TimeoutError, OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BrokerUnavailable(f"Redis at {self.url}: {type(exc).__name__}: {exc}") from exc
        answers: list[str | None] = [None] * len(messages)
        for index, error in zip(refused[::2], refused[1::2], strict=True):
            reason = error.decode() if isinstance(error, bytes) else str(error)
            if reason.startswith(_TRANSIENT):
                raise BrokerUnavailable(f"Redis at {self.url}: {reason}")
            answers[int(index)] = f"Redis refused it: {reason}"
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
