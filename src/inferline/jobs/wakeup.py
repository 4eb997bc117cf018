"""Wake-ups for idle workers: an in-process signal, or PostgreSQL LISTEN/NOTIFY across machines.

Workers also poll every `poll_s`, so a lost wake-up only costs latency, never a job. A worker of some
kinds only (the orchestration lane) waits on a `lane` of its own: woken only by submissions of its kinds,
and never cleared by another worker's claim, which could swallow a wake-up meant for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any, Protocol

import asyncpg
import structlog
from sqlalchemy import make_url

log = structlog.get_logger(__name__)
CHANNEL = "inferline_jobs"


class Wakeup(Protocol):
    def notify(self, kinds: Collection[str] = ()) -> None:
        """Jobs of `kinds` can be claimed (none named: of any kind)."""

    def clear(self) -> None: ...
    async def wait(self, timeout_s: float) -> bool: ...
    def lane(self, kinds: Collection[str]) -> Wakeup:
        """A wake-up of its own for a worker of `kinds` only, notified with this one."""

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class LocalWakeup:
    """Submissions and workers in one process (SQLite's `serve`)."""

    def __init__(self, kinds: Collection[str] | None = None) -> None:
        self._event = asyncio.Event()
        self._kinds = None if kinds is None else frozenset(kinds)  # None: woken for every kind
        self._lanes: list[LocalWakeup] = []

    def notify(self, kinds: Collection[str] = ()) -> None:
        if not kinds or self._kinds is None or not self._kinds.isdisjoint(kinds):
            self._event.set()
        for lane in self._lanes:
            lane.notify(kinds)

    def lane(self, kinds: Collection[str]) -> LocalWakeup:
        lane = LocalWakeup(kinds)
        self._lanes.append(lane)
        return lane

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        return self._event.is_set()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class PostgresWakeup(LocalWakeup):
    """Also wakes on NOTIFY, which `JobStore.add` sends inside the submitting transaction."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self._dsn)
            await self._conn.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_unavailable", error=str(exc), fallback="polling")

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, kind: str) -> None:
        self.notify((kind,) if kind else ())

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
