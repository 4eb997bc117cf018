"""The progress of a worker's running jobs, written together: one transaction per `interval_s` at most.

A job's stage or progress is written at once (awaited) if nothing was written for `interval_s`, else at the end
of that interval, with every other job's. A checkpoint is written at once, in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.jobs import webhooks
from inferline.jobs.context import ProgressWrite, WorkerContext
from inferline.jobs.model import WebhookEvent
from inferline.jobs.store import JobStore

log = structlog.get_logger(__name__)

WriteProgress = Callable[[list[ProgressWrite]], Awaitable[set[str]]]


async def write_progress(engine: AsyncEngine, owner: str, items: list[ProgressWrite]) -> set[str]:
    """One transaction, each row guarded by `owner`'s lease; returns the ids of the jobs whose lease was lost.
    Rows are written in id order, the order of every batched write of job rows (see store.py)."""
    now = utcnow()
    lost = set()
    async with db.write(engine) as conn:
        store = JobStore(conn)
        for ctx, values, hook in sorted(items, key=lambda item: item[0].id):
            if not await store.update_running(ctx.id, owner, values | {"updated_at": now}):
                lost.add(ctx.id)
            elif hook:
                await webhooks.enqueue(conn, ctx.job, WebhookEvent.PROGRESS, now)
    return lost


class ProgressBatcher:
    """The `ProgressSink` of a worker's contexts: collects the jobs with progress to write and writes them
    through `write`; a job whose lease turns out lost is handed to `lease_lost`."""

    def __init__(
        self,
        *,
        interval_s: float,
        webhook_interval_s: float,
        write: WriteProgress,
        lease_lost: Callable[[str], None],
    ) -> None:
        self.interval_s = interval_s
        self.webhook_interval_s = webhook_interval_s
        self._write = write
        self._lease_lost = lease_lost
        self._dirty: dict[WorkerContext, None] = {}  # jobs with progress to write, in order
        self._last_write_s = 0.0  # monotonic time of the last progress write (or claim)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps tasks only weakly
        self._lock = asyncio.Lock()
        self._closed = False

    def rows_written(self) -> None:
        """The jobs' rows were just written (by their claim): their first stages can wait a whole interval."""
        self._last_write_s = time.monotonic()

    async def changed(self, ctx: WorkerContext) -> None:
        """A job has progress to write. Written at once (awaited) if nothing was written for `interval_s`,
        else at the end of that interval, with every other job's."""
        self._dirty[ctx] = None
        wait_s = self._last_write_s + self.interval_s - time.monotonic()
        if wait_s <= 0:
            await self.flush()
        elif self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._due)

    def _due(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self.flush())

    async def write_now(self, items: list[ProgressWrite]) -> set[str]:
        return await self._write(items)

    async def flush(self) -> None:
        """Write every running job's pending progress in one transaction. A job whose lease is lost is
        interrupted (as a heartbeat would); a failed write leaves the values pending for the next one."""
        async with self._lock:
            taken = []
            for ctx in list(self._dirty):
                if ctx.writing:  # its own write (a checkpoint) is in flight: next time
                    continue
                del self._dirty[ctx]
                part = await ctx.begin_batch_write()
                if part is not None:
                    taken.append(part)
            if not taken:
                return
            self._last_write_s = time.monotonic()
            try:
                lost = await self._write(taken)
            except BaseException as exc:
                # Also when the task flushing is cancelled: a job reporting its progress writes the other
                # jobs' too, and its own cancel must not leave their writes held (their attempts could then
                # never record an outcome) nor their values unwritten.
                for ctx, values, _ in taken:
                    ctx.end_batch_write(failed_values=values)
                    self._dirty[ctx] = None
                if not isinstance(exc, Exception):
                    raise
                log.warning("progress_write_failed", jobs=len(taken), exc_info=True)
                return
            for ctx, _, _ in taken:
                ctx.end_batch_write()
        for job_id in lost:
            self._lease_lost(job_id)

    def close(self) -> None:
        """The worker halts: no more deferred writes (what is pending goes out with the outcomes)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
