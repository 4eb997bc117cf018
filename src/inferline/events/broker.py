"""The port to a message broker: three adapters (`nats.py`, `redis.py`, `rabbitmq.py`), each tested against
the real server, and `MemoryBroker`, the test double.

An adapter connects on first use and again after a failure, translates its library's errors at the
boundary (an unreachable or failing broker: `BrokerUnavailable`; one event the broker answered with a
refusal: a reason string in `publish`'s answer), and bounds every call with `timeout_s`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from inferline.errors import BrokerUnavailable


@dataclass(frozen=True)
class Message:
    id: str  # the event's id: the broker's dedupe key where it has one (NATS `Nats-Msg-Id`)
    type: str  # `job.succeeded`: routes it (a NATS subject's and a RabbitMQ routing key's tail)
    body: bytes  # the CloudEvent, JSON


class Broker(Protocol):
    name: str  # nats, redis, rabbitmq: the `broker` label of the events metrics

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        """Send `messages` in order; for each, None once the broker has it durably, or the reason it
        refused that one. Raises `BrokerUnavailable` when it cannot tell (nothing is known sent)."""
        ...

    def tail(self, types: Sequence[str]) -> AsyncIterator[bytes]:
        """Follow the events published from now on, of `types` (`job.failed`, `job.*`; all if empty)."""
        ...

    async def aclose(self) -> None: ...


def type_matches(patterns: Sequence[str], type_: str) -> bool:
    """NATS-style: `*` is one dot-separated token, `>` one or more at the end; no patterns match all."""
    return not patterns or any(_matches(pattern.split("."), type_.split(".")) for pattern in patterns)


def _matches(wanted: list[str], parts: list[str]) -> bool:
    for i, word in enumerate(wanted):
        if word == ">":
            return len(parts) > i
        if i >= len(parts) or word not in ("*", parts[i]):
            return False
    return len(wanted) == len(parts)


@dataclass
class MemoryBroker:
    """Keeps what it was sent; `refuse` (event types) and `down` (a flag) play a refusing and an
    unreachable broker."""

    name: str = "memory"
    sent: list[Message] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    down: bool = False
    _new: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        if self.down:
            raise BrokerUnavailable("the memory broker is down")
        answers: list[str | None] = []
        for message in messages:
            if message.type in self.refuse:
                answers.append(f"refused type {message.type}")
            else:
                self.sent.append(message)
                answers.append(None)
        async with self._new:
            self._new.notify_all()
        return answers

    async def tail(self, types: Sequence[str]) -> AsyncIterator[bytes]:
        seen = len(self.sent)
        while True:
            async with self._new:
                await self._new.wait_for(functools.partial(self._more_than, seen))
            for message in self.sent[seen:]:
                if type_matches(types, message.type):
                    yield message.body
            seen = len(self.sent)

    def _more_than(self, count: int) -> bool:
        return len(self.sent) > count

    async def aclose(self) -> None:
        pass
