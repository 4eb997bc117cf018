"""Wake-ups for idle workers: an in-process signal, or PostgreSQL LISTEN/NOTIFY across machines.

Workers also poll every `poll_s`, so a lost wake-up only costs latency, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import asyncpg
import structlog
from sqlalchemy import make_url

log = structlog.get_logger(__name__)
CHANNEL = "inferline_jobs"


class Wakeup(Protocol):
    def notify(self) -> None: ...
    def clear(self) -> None: ...
    async def wait(self, timeout_s: float) -> bool: ...
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class LocalWakeup:
    """Submissions and workers in one process (SQLite's `serve`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

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

    def _on_notify(self, *_args: Any) -> None:
        self.notify()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
