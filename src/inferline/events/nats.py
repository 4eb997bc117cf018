"""NATS JetStream: one stream per topic (`<topic>_events`, subjects `<topic>.>`) capped at `max_events`,
made when missing; an event goes to subject `<topic>.<type>` with header `Nats-Msg-Id` = its id, so
the stream drops a repeat within its duplicate window (a publisher that lost its lease after sending)."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
NO_STREAM = "NATS refused it: no stream takes its subject"


def stream_name(topic: str) -> str:
    return f"{topic}_events"


def _refusal(reply: Any) -> str | None:
    """None for a stream's acknowledgement, else why the message was refused."""
    if reply.headers and reply.headers.get("Status") == "503":
        return NO_STREAM
    try:
        answer = json.loads(reply.data)
    except ValueError:
        return f"NATS answered {reply.data[:200]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is not None:
        return f"NATS refused it: {error.get('description')} (code {error.get('err_code')})"
    return None


async def _quiet(_exc: Exception) -> None:
    """The client's own error callback: its errors reach us as exceptions, translated below."""


class NatsBroker:
    name = "nats"

    def __init__(self, url: str, *, topic: str, max_events: int, timeout_s: float) -> None:
        self.url = url
        self.topic = topic
        self.max_events = max_events
        self.timeout_s = timeout_s
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[str | None]] = {}  # acknowledgements by reply token

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
                self._inbox = nc.new_inbox()
                await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
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
        assert self._nc is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                sends = [await self._send(self._nc, message) for message in messages]
                answers = [await sent if isinstance(sent, asyncio.Future) else sent for sent in sends]
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self.aclose()
            raise BrokerUnavailable(f"NATS at {self.url}: {type(exc).__name__}: {exc}") from exc
        if NO_STREAM in answers:  # the stream was removed: the next batch connects and makes it again
            await self.aclose()
        del js
        return answers

    async def _send(self, nc: Client, message: Message) -> asyncio.Future[str | None] | str:
        """Written in order, acknowledged later (through `_on_reply`); a message the client itself refuses
        is answered at once. The client's own `publish_async` is not used: in nats-py 2.16 a stream's
        error reply raises inside its callback and leaves the publish waiting forever."""
        headers = {"Nats-Msg-Id": message.id, "Content-Type": CONTENT_TYPE}
        token = nc._nuid.next().decode()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            subject, reply = f"{self.topic}.{message.type}", f"{self._inbox}.{token}"
            await nc.publish(subject, message.body, reply=reply, headers=headers)
        except nats.errors.MaxPayloadError as exc:
            del self._waiting[token]
            return f"NATS refused it: over the server's max_payload ({len(message.body)} bytes): {exc}"
        return future

    async def _on_reply(self, msg: Any) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(_refusal(msg))

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
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await nc.close()
            except (TimeoutError, OSError, nats.errors.Error):
                pass
