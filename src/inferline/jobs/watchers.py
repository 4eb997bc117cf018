"""Live views of jobs for event streams: one poller per process reads every watched job and wakes the
streams whose job changed, so a stream never queries the database itself.

A tick costs one query of `(id, updated_at)` for all watched jobs (in batches of `BATCH`), plus one that
reads the whole rows of the jobs that changed; 50 streams cost what one does. Every write that a watcher
could see (status, stage, progress, detail, cancel request, outcome) sets `updated_at`, and lease renewal
does not, so a changed `updated_at` is exactly "something to show". The database is the source, so a
job written by a worker in any process is seen within `poll_s`.

Per tenant, this process admits at most `max_streams_per_tenant` watches at a time (0: no limit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.errors import Overloaded
from inferline.jobs.model import Job
from inferline.jobs.store import job_from_row
from inferline.schema import jobs

log = structlog.get_logger(__name__)

BATCH = 500  # ids per IN list: well under SQLite's 32,766 bound parameters, small enough for one plan
# Told to a tenant over its stream cap: a dropped client's slot is freed when the next keepalive fails to
# write, within `events_keepalive_s` (15 s by default).
RETRY_AFTER_S = 15.0


@dataclass
class _Entry:
    """One watched job, shared by every stream of it in this process."""

    job: Job | None
    refs: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, job: Job | None) -> None:
        # The job first, then wake: a stream that took `changed` before reading `job` sees the change.
        self.job = job
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class JobWatch:
    """A stream's handle on a watched job."""

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def current(self) -> tuple[Job | None, asyncio.Event]:
        """The job as last read (None once it is gone), and an event set at its next change."""
        return self._entry.job, self._entry.changed

    @staticmethod
    async def wait(changed: asyncio.Event, timeout_s: float) -> bool:
        """True if `changed` was set within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout_s)
        return changed.is_set()


class JobWatchers:
    def __init__(self, engine: AsyncEngine, poll_s: float, max_streams_per_tenant: int = 0) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.max_streams_per_tenant = max_streams_per_tenant
        self._entries: dict[str, _Entry] = {}
        self._streams: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None

    def streams(self, tenant: str) -> int:
        return self._streams.get(tenant, 0)

    def admit(self, tenant: str) -> None:
        """Take one of the tenant's stream slots, or raise Overloaded (429) when it has none left.
        Give it back with `release`."""
        taken = self._streams.get(tenant, 0)
        if self.max_streams_per_tenant and taken >= self.max_streams_per_tenant:
            raise Overloaded(
                f"{taken} event streams are open for this tenant, the limit (events_max_streams_per_tenant)",
                retry_after_s=RETRY_AFTER_S,
            )
        self._streams[tenant] = taken + 1

    def release(self, tenant: str) -> None:
        left = self._streams.get(tenant, 0) - 1
        if left > 0:
            self._streams[tenant] = left
        else:
            self._streams.pop(tenant, None)

    @contextlib.asynccontextmanager
    async def watch(self, job: Job) -> AsyncIterator[JobWatch]:
        """Follow `job` (as the caller just read it) until the block ends."""
        entry = self._entries.get(job.id)
        if entry is None:
            entry = self._entries[job.id] = _Entry(job)
        entry.refs += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="job-watchers")
        try:
            yield JobWatch(entry)
        finally:
            entry.refs -= 1
            if entry.refs == 0:
                del self._entries[job.id]

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        """Runs while anything is watched; the next `watch` starts it again."""
        while self._entries:
            await asyncio.sleep(self.poll_s)
            try:
                await self.tick()
            except Exception as exc:  # a database hiccup: streams keep their last view and their keepalives
                log.warning("job_watchers_poll_failed", error=str(exc))

    async def tick(self) -> None:
        """Read every watched job's version; publish the ones that changed or are gone."""
        ids = list(self._entries)
        async with db.read(self.engine) as conn:
            versions: dict[str, datetime] = {}
            for start in range(0, len(ids), BATCH):
                query = sa.select(jobs.c.id, jobs.c.updated_at).where(jobs.c.id.in_(ids[start : start + BATCH]))
                versions.update((row.id, row.updated_at) for row in await conn.execute(query))
            changed = [job_id for job_id in ids if self._is_changed(job_id, versions.get(job_id))]
            fresh = await _read_jobs(conn, changed)
        for job_id in changed:
            entry = self._entries.get(job_id)
            if entry is not None:
                entry.publish(fresh.get(job_id))

    def _is_changed(self, job_id: str, version: datetime | None) -> bool:
        entry = self._entries.get(job_id)
        if entry is None or entry.job is None:
            return False
        return version is None or version != entry.job.updated_at


async def _read_jobs(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Job]:
    found: dict[str, Job] = {}
    for start in range(0, len(ids), BATCH):
        query = sa.select(jobs).where(jobs.c.id.in_(ids[start : start + BATCH]))
        found.update((row["id"], job_from_row(row)) for row in (await conn.execute(query)).mappings())
    return found
