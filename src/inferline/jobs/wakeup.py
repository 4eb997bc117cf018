"""Wake-ups for idle workers: an in-process signal, PostgreSQL LISTEN/NOTIFY across machines, or short polls
on MariaDB/MySQL, which has no LISTEN/NOTIFY.

Workers also poll every `poll_s`, so a lost wake-up only costs latency, never a job. A worker of some
kinds only (the orchestration lane) waits on a `lane` of its own: woken only by submissions of its kinds,
and never cleared by another worker's claim, which could swallow a wake-up meant for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterator
from typing import Any, Protocol

import asyncpg
import structlog
from sqlalchemy import make_url

log = structlog.get_logger(__name__)
CHANNEL = "inferline_jobs"


class JobEnds:
    """Wakes what waits on jobs whose outcome a worker of this process has just written: a parent waiting
    on its children (`jobs/children.py`) reads them at once instead of at its next poll. A job running in
    another process (its lease owner is not one of `owners`) wakes nothing: its waiter polls.

        with ends.watch(child_ids) as ended:   # before reading them, so no end falls in between
            ...read the children...
            await ends.until(ended, timeout_s=poll_s)
    """

    def __init__(self) -> None:
        self._watchers: dict[str, list[asyncio.Event]] = {}
        self.owners: set[str] = set()  # the lease owner names of the workers that report here

    def ended(self, job_ids: Collection[str]) -> None:
        """These jobs' outcomes were written (an end, or an attempt's failure with a retry to come), or given
        up: a waiter woken for nothing reads the job again and waits on."""
        for job_id in job_ids:
            for event in self._watchers.get(job_id, ()):
                event.set()

    @contextlib.contextmanager
    def watch(self, job_ids: Collection[str]) -> Iterator[asyncio.Event]:
        """An event set when any of `job_ids` has an outcome written in this process, while the block runs."""
        event = asyncio.Event()
        ids = tuple(job_ids)
        for job_id in ids:
            self._watchers.setdefault(job_id, []).append(event)
        try:
            yield event
        finally:
            for job_id in ids:
                events = self._watchers[job_id]
                events.remove(event)
                if not events:
                    del self._watchers[job_id]

    @staticmethod
    async def until(event: asyncio.Event, *, timeout_s: float) -> bool:
        """Whether `event` was set within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
        return event.is_set()


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


class PollingWakeup(LocalWakeup):
    """MariaDB/MySQL: submissions in this process wake its workers at once; those of other processes are
    seen within `interval_s`, the longest an idle worker waits before it looks for jobs again. Each idle
    worker then costs one claim query per interval (an index range read that finds nothing)."""

    def __init__(self, interval_s: float, kinds: Collection[str] | None = None) -> None:
        super().__init__(kinds)
        self.interval_s = interval_s

    def lane(self, kinds: Collection[str]) -> PollingWakeup:
        lane = PollingWakeup(self.interval_s, kinds)
        self._lanes.append(lane)
        return lane

    async def wait(self, timeout_s: float) -> bool:
        return await super().wait(min(timeout_s, self.interval_s))


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
