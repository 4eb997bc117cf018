"""The worker: claims jobs in batches, runs them as tasks, renews leases, records outcomes in batches.

One `Worker` holds `concurrency` job slots. Its loops:
- claim: fills free slots with one batched claim, then sleeps until a wake-up or `poll_s`;
- heartbeat: renews the leases of all its jobs in one UPDATE, flushes throttled progress and learns
  of cancel requests (a cancel is therefore seen within `heartbeat_s`);
- reaper: takes back expired leases of dead workers and cancels queued jobs past their deadline;
- completer: writes finished attempts in one transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Canceled, JobError, NonRetryable, Retry
from inferline.inference.runtime import ModelRuntime
from inferline.jobs import webhooks
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, RetryPolicy, WebhookEvent
from inferline.jobs.outcomes import Outcome, reap_jobs, record_outcomes
from inferline.jobs.service import claim_jobs
from inferline.jobs.store import JobStore
from inferline.jobs.wakeup import Wakeup
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 4
    lease_s: float = 30.0
    heartbeat_s: float = 1.0
    poll_s: float = 1.0
    claim_batch: int = 64
    kind_limits: Mapping[str, int] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress_interval_s: float = 0.25
    webhook_progress_interval_s: float = 0.5
    reap_every_s: float = 2.0
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}")


@dataclass
class _Running:
    ctx: JobContext
    task: asyncio.Task[Outcome] | None = None
    deadline_timer: asyncio.TimerHandle | None = None


class Worker:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: KindRegistry,
        config: WorkerConfig,
        *,
        wakeup: Wakeup,
        metrics: Metrics,
        kinds: list[str] | None = None,
        models: ModelRuntime | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.config = config
        self.wakeup = wakeup
        self.metrics = metrics
        self.kinds = kinds or registry.names
        self.models = models
        self._running: dict[str, _Running] = {}
        self._outcomes: list[tuple[JobContext, Outcome]] = []
        self._outcome_ready = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._halted = asyncio.Event()
        # Progress of all running jobs goes out in one transaction per `progress_interval_s`.
        self._dirty: dict[JobContext, None] = {}  # jobs with progress to write, in order
        self._last_progress_s = 0.0  # monotonic time of the last progress write (or claim)
        self._progress_timer: asyncio.TimerHandle | None = None
        self._progress_task: asyncio.Task[None] | None = None  # held: the loop keeps tasks only weakly
        self._progress_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        self.metrics.active_workers.inc()
        for loop in (self._claim_loop, self._heartbeat_loop, self._reap_loop, self._complete_loop):
            self._loops.append(asyncio.create_task(self._guard(loop), name=f"{self.name}:{loop.__name__}"))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming, let running jobs finish for `grace_s`, then release the rest to the queue.

        Loops are not cancelled but told to halt, so none is cut off inside a database call."""
        self._stopping = True
        self._slot_freed.set()
        self.wakeup.notify()
        await asyncio.gather(self._loops[0], return_exceptions=True)  # the claim loop sees _stopping
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for running in list(self._running.values()):
                self._interrupt(running, SHUTDOWN)
            if pending:
                await asyncio.wait(pending)
        self._halted.set()
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        self._outcome_ready.set()
        _, stuck = await asyncio.wait(self._loops, timeout=max(grace_s, 1.0))
        for task in stuck:  # only a loop hung on an unreachable database gets here
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._flush_outcomes()
        self.metrics.active_workers.dec()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker halts."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halted.wait(), seconds)

    async def _guard(self, loop: Callable[[], Any]) -> None:
        """Keep a loop alive through database hiccups: log, back off, go on."""
        while not self._halted.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker_loop_failed", loop=loop.__name__, worker=self.name)
                await self._pause(self.config.poll_s)

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.config.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self.wakeup.clear()
            claimed = await claim_jobs(
                self.engine,
                owner=self.name,
                kinds=self.kinds,
                limit=min(free, self.config.claim_batch),
                lease_s=self.config.lease_s,
                kind_limits=self.config.kind_limits,
            )
            if claimed:  # the claim wrote their rows: their first stages can wait for the next write
                self._last_progress_s = time.monotonic()
            for job in claimed:
                self._launch(job)
            if len(claimed) < min(free, self.config.claim_batch):
                await self.wakeup.wait(self.config.poll_s)

    def _launch(self, job: Job) -> None:
        running = _Running(JobContext(job, self))
        self._running[job.id] = running
        if job.attempts == 1 and job.started_at is not None:
            self.metrics.queue_wait.labels(job.kind).observe((job.started_at - job.created_at).total_seconds())
        if job.deadline_at is not None:
            delay_s = max(0.0, (job.deadline_at - utcnow()).total_seconds())
            loop = asyncio.get_running_loop()
            running.deadline_timer = loop.call_later(delay_s, self._interrupt, running, "deadline")
        running.task = asyncio.create_task(self._execute(running), name=f"job:{job.id}")
        self.metrics.jobs_running.inc()

    async def _execute(self, running: _Running) -> Outcome:
        ctx = running.ctx
        structlog.contextvars.bind_contextvars(job_id=ctx.id, tenant=ctx.tenant, kind=ctx.job.kind)
        outcome = Outcome("lost")  # if the attempt is torn down by a cancellation that is not ours
        try:
            outcome = await self._attempt(ctx)
        finally:
            if running.deadline_timer is not None:
                running.deadline_timer.cancel()
            outcome.unwritten = ctx.settle()
            self._outcomes.append((ctx, outcome))
            self._outcome_ready.set()
        return outcome

    async def _attempt(self, ctx: JobContext) -> Outcome:
        try:
            kind = self.registry.get(ctx.job.kind)
            result = await kind.func(ctx, kind.parse(ctx.job.input))
            if ctx.cancel_reason is not None:
                return self._stopped(ctx)
            return Outcome("succeeded", result=result if result is not None else {})
        except (asyncio.CancelledError, Canceled):
            if ctx.cancel_reason is None:
                raise
            return self._stopped(ctx)
        except Exception as exc:
            if ctx.cancel_reason is not None:  # a job canceled while failing is canceled, never retried
                return self._stopped(ctx)
            return self._failed(ctx, exc)

    @staticmethod
    def _stopped(ctx: JobContext) -> Outcome:
        reason = ctx.cancel_reason or "canceled"
        if reason == LEASE_LOST:
            return Outcome("lost")
        if reason == SHUTDOWN:
            return Outcome("released")
        return Outcome("canceled", message=reason)

    def _failed(self, ctx: JobContext, exc: Exception) -> Outcome:
        retryable = not isinstance(exc, NonRetryable | ValidationError)
        if retryable and not isinstance(exc, JobError):
            log.exception("job_attempt_crashed", attempt=ctx.attempt)
        else:
            log.info("job_attempt_failed", attempt=ctx.attempt, error=str(exc), retryable=retryable)
        after_s = exc.after_s if isinstance(exc, Retry) else None
        return Outcome(
            "failed",
            error_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            retryable=retryable,
            after_s=after_s,
        )

    def _interrupt(self, running: _Running, reason: str) -> None:
        ctx = running.ctx
        if ctx._cancel_reason is None:
            ctx._cancel_reason = reason
        if running.task is not None and not running.task.done():
            running.task.cancel()

    # -- heartbeats, progress, reaping --------------------------------------------------------

    async def progress_changed(self, ctx: JobContext) -> None:
        """A job has progress to write. Written at once (awaited) if nothing was written for
        `progress_interval_s`, else at the end of that interval, with every other job's."""
        self._dirty[ctx] = None
        wait_s = self._last_progress_s + self.config.progress_interval_s - time.monotonic()
        if wait_s <= 0:
            await self.flush_progress()
        elif self._progress_timer is None and not self._halted.is_set():
            self._progress_timer = asyncio.get_running_loop().call_later(wait_s, self._progress_due)

    def _progress_due(self) -> None:
        self._progress_timer = None
        self._progress_task = asyncio.create_task(self.flush_progress())

    async def flush_progress(self) -> None:
        """Write every running job's pending progress in one transaction. A job whose lease is lost is
        interrupted (as a heartbeat would); a failed write leaves the values pending for the next one."""
        async with self._progress_lock:
            taken = []
            for ctx in list(self._dirty):
                if ctx.writing:  # its own write (a checkpoint) is in flight: next time
                    continue
                del self._dirty[ctx]
                pending = await ctx.begin_batch_write()
                if pending is not None:
                    taken.append((ctx, *pending))
            if not taken:
                return
            self._last_progress_s = time.monotonic()
            try:
                lost = await self.write_progress(taken)
            except Exception:
                log.warning("progress_write_failed", jobs=len(taken), exc_info=True)
                for ctx, values, _ in taken:
                    ctx.end_batch_write(failed_values=values)
                    self._dirty[ctx] = None
                return
            for ctx, _, _ in taken:
                ctx.end_batch_write()
        for job_id in lost:
            running = self._running.get(job_id)
            if running is not None:
                self._interrupt(running, LEASE_LOST)

    async def write_progress(self, items: list[tuple[JobContext, dict[str, Any], bool]]) -> set[str]:
        """One transaction; returns the ids of the jobs whose lease was lost."""
        now = utcnow()
        lost = set()
        async with db.write(self.engine) as conn:
            store = JobStore(conn)
            for ctx, values, hook in items:
                if not await store.update_running(ctx.id, self.name, values | {"updated_at": now}):
                    lost.add(ctx.id)
                elif hook:
                    await webhooks.enqueue(conn, ctx.job, WebhookEvent.PROGRESS, now)
        return lost

    async def _heartbeat_loop(self) -> None:
        while not self._halted.is_set():
            await self._pause(self.config.heartbeat_s)
            if not self._halted.is_set():
                await self.heartbeat()

    async def heartbeat(self) -> None:
        running = dict(self._running)
        if not running:  # an idle worker takes no write lock
            return
        await self.flush_progress()
        async with db.write(self.engine) as conn:
            states = await JobStore(conn).renew_leases(
                owner=self.name, job_ids=running, now=utcnow(), lease_s=self.config.lease_s
            )
        held = {state.job_id: state for state in states}
        for job_id, item in running.items():
            state = held.get(job_id)
            if state is None:
                if item.task is not None and not item.task.done():
                    self._interrupt(item, LEASE_LOST)
            elif state.cancel_requested:
                self._interrupt(item, "canceled")

    async def _reap_loop(self) -> None:
        while not self._halted.is_set():
            await reap_jobs(self.engine, policy=self.config.retry, metrics=self.metrics)
            await self._pause(self.config.reap_every_s)

    # -- recording outcomes -------------------------------------------------------------------

    async def _complete_loop(self) -> None:
        while not self._halted.is_set():
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            await self._flush_outcomes()

    async def _flush_outcomes(self) -> None:
        async with self._flush_lock:
            await self._write_outcomes()

    async def _write_outcomes(self) -> None:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        try:
            for ctx, _ in batch:
                await ctx.writes_done()
            await record_outcomes(
                self.engine,
                owner=self.name,
                items=[(ctx.job, outcome) for ctx, outcome in batch],
                policy=self.config.retry,
                metrics=self.metrics,
            )
        except Exception:
            # Keep the batch (and its leases, renewed by heartbeats) for the next try.
            self._outcomes[:0] = batch
            self._outcome_ready.set()
            raise
        for ctx, _ in batch:
            self._running.pop(ctx.id, None)
            self.metrics.jobs_running.dec()
        self._slot_freed.set()
