"""Server-Sent Events of a job: event ids to resume from (`Last-Event-ID`), `: ping` keepalives, a
lifetime after which the stream ends with a `retry:` hint, and the tenant's stream slot held for exactly
as long as the response runs.

An event's id is `<updated_at in µs>.<status>`: opaque to clients, and enough to tell on reconnection
whether the job changed since (any new write moves `updated_at`) and whether its status did.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from inferline.jobs.model import Job, JobStatus, public_view
from inferline.jobs.watchers import JobWatchers

RETRY_MS = 1000  # the reconnection delay suggested when a stream reaches its lifetime
_EVENT_ID = re.compile(r"(\d{1,20})\.([a-z]{1,16})")
_STATUSES = frozenset(status.value for status in JobStatus)


@dataclass(frozen=True)
class StreamLimits:
    keepalive_s: float
    lifetime_s: float


class EventStream(StreamingResponse):
    """Calls `on_close` however the response ends: finished, failed, or its client gone before the first
    byte (a generator that never started never runs its `finally`)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def event_id(job: Job) -> str:
    return f"{_micros(job.updated_at)}.{job.status.value}"


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


@dataclass
class _Shown:
    """What the client has seen of the job: nothing, all of one event, or (resumed) an event's id."""

    status: str | None = None
    progress: tuple[Any, ...] | None = None
    version: int | None = None

    @classmethod
    def resumed(cls, last_event_id: str | None) -> _Shown:
        """An id we never sent (malformed, or of no status) is ignored: the stream starts afresh."""
        match = _EVENT_ID.fullmatch((last_event_id or "").strip())
        if match is None or match.group(2) not in _STATUSES:
            return cls()
        return cls(status=match.group(2), version=int(match.group(1)))

    def next_event(self, job: Job) -> str | None:
        """The name of the event to send for `job` (None: nothing the client has not seen)."""
        progress = (job.stage, job.progress, job.detail)
        name: str | None = None
        if job.status.value != self.status:
            name = "status"
        elif self.progress is None:  # resumed: the id says whether anything moved since
            name = "progress" if _micros(job.updated_at) != self.version else None
        elif progress != self.progress:
            name = "progress"
        self.status, self.progress, self.version = job.status.value, progress, _micros(job.updated_at)
        return name


def _event(name: str, job: Job) -> str:
    data = json.dumps(public_view(job), separators=(",", ":"))
    return f"id: {event_id(job)}\nevent: {name}\ndata: {data}\n\n"


async def job_events(
    watchers: JobWatchers, job: Job, *, last_event_id: str | None, limits: StreamLimits
) -> AsyncIterator[str]:
    """`status` and `progress` events of `job` until it ends, it is gone, or the lifetime passes."""
    shown = _Shown.resumed(last_event_id)
    clock = asyncio.get_running_loop().time
    deadline = clock() + limits.lifetime_s
    last_sent = clock()
    async with watchers.watch(job) as watch:
        while True:
            current, changed = watch.current()
            if current is None:
                return
            name = shown.next_event(current)
            if name is not None:
                yield _event(name, current)
                last_sent = clock()
            if current.status.is_terminal:
                return
            now = clock()
            if now >= deadline:
                yield f": stream lifetime reached; reconnect with Last-Event-ID\nretry: {RETRY_MS}\n\n"
                return
            if now - last_sent >= limits.keepalive_s:
                yield ": ping\n\n"  # a comment line: proxies and clients see a live connection
                last_sent = now
            await watch.wait(changed, min(last_sent + limits.keepalive_s, deadline) - now)
