"""NATS JetStream: one stream per topic (`<topic>_events`, subjects `<topic>.>`) capped at `max_events`,
made when missing; an event goes to subject `<topic>.<type>` with header `Nats-Msg-Id` = its id, so
the stream drops a repeat within its duplicate window (a publisher that lost its lease after sending)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from inferline.errors import BrokerUnavailable
from inferline.events.broker import Message
from inferline.events.envelope import CONTENT_TYPE

DUPLICATE_WINDOW_S = 300.0


def stream_name(topic: str) -> str:
    return f"{topic}_events"


async def _quiet(_exc: Exception) -> None:
    """The client's own error callback: its errors reach us as exceptions, translated below."""


class NatsBroker:
    def __init__(self, url: str, *, topic: str, max_events: int, timeout_s: float) -> None:
        self.url = url
        self.topic = topic
        self.max_events = max_events
        self.timeout_s = timeout_s
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and self._nc.is_connected:
            return self._js
        await self.aclose()
        try:
            async with asyncio.timeout(self.timeout_s):
                nc = await nats.connect(
                    self.url,
                    connect_timeout=self.timeout_s,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    error_cb=_quiet,
                )
                self._nc = nc
                js = nc.jetstream(timeout=self.timeout_s)
                await self._ensure_stream(js)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self.aclose()
            raise BrokerUnavailable(f"NATS at {self.url}: {type(exc).__name__}: {exc}") from exc
        self._js = js
        return js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(stream_name(self.topic))
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=stream_name(self.topic),
                subjects=[f"{self.topic}.>"],
                max_msgs=self.max_events,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
            await js.add_stream(config)

    async def publish(self, messages: Sequence[Message]) -> list[str | None]:
        js = await self._connect()
        try:
            async with asyncio.timeout(self.timeout_s):
                futures = [await self._send(js, message) for message in messages]
                return [await self._answer(future) for future in futures]
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self.aclose()
            raise BrokerUnavailable(f"NATS at {self.url}: {type(exc).__name__}: {exc}") from exc

    async def _send(self, js: JetStreamContext, message: Message) -> asyncio.Future[Any] | str:
        """Written in order, acknowledged later; a message the client itself refuses is its reason."""
        headers = {"Nats-Msg-Id": message.id, "Content-Type": CONTENT_TYPE}
        try:
            return await js.publish_async(f"{self.topic}.{message.type}", message.body, headers=headers)
        except nats.errors.MaxPayloadError as exc:
            return f"NATS refused it: over the server's max_payload ({len(message.body)} bytes): {exc}"

    @staticmethod
    async def _answer(sent: asyncio.Future[Any] | str) -> str | None:
        if isinstance(sent, str):
            return sent
        try:
            await sent
        except nats.js.errors.NoStreamResponseError:
            return "NATS refused it: no stream takes its subject"
        except nats.js.errors.APIError as exc:  # the stream answered with an error: a nack
            return f"NATS refused it: {exc.description or exc}"
        return None

    async def tail(self, types: Sequence[str]) -> AsyncIterator[bytes]:
        await self._connect()
        assert self._nc is not None
        subjects = [f"{self.topic}.{pattern}" for pattern in types] or [f"{self.topic}.>"]
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

        async def on_message(msg: Any) -> None:
            await queue.put(msg.data)

        subscriptions = [await self._nc.subscribe(subject, cb=on_message) for subject in subjects]
        try:
            while True:
                yield await queue.get()
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await nc.close()
            except (TimeoutError, OSError, nats.errors.Error):
                pass
