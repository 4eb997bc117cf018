"""The worker: claims jobs in batches, runs them as tasks, renews leases, records outcomes in batches.

One `Worker` holds `concurrency` job slots and is made of parts, each in its module:
- `Attempts` (attempts.py): the running attempts, their tasks and deadlines, and how each ended;
- `ProgressBatcher` (progress.py): the progress of all running jobs, in one transaction per `progress_interval_s`;
- `heartbeats.beat`: lease renewal, which also learns of cancel requests and lost leases;
- `OutcomeRecorder` (recording.py): finished attempts, in one transaction per batch.
Its loops:
- claim: fills free slots with one batched claim (one batch ahead of them when attempts end faster than a
  claim returns, see `_claim_limit`), then sleeps until a wake-up or `poll_s`;
- heartbeat: renews the leases of all its jobs in one UPDATE and flushes throttled progress, every
  `heartbeat_s` (a cancel is therefore seen within `heartbeat_s`);
- reaper: takes back expired leases of dead workers and cancels queued jobs past their deadline (and, on
  PostgreSQL, gives the planner the jobs table's statistics if it has none: `service.ensure_claim_statistics`);
- completer: writes finished attempts as they come.
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
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.inference.runtime import ModelRuntime
from inferline.jobs import heartbeats
from inferline.jobs.attempts import Attempts
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, ProgressWrite
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import reap_jobs
from inferline.jobs.progress import ProgressBatcher, write_progress
from inferline.jobs.recording import OutcomeRecorder
from inferline.jobs.service import ClaimStart, claim_jobs, ensure_claim_statistics
from inferline.jobs.store import JobStore
from inferline.jobs.wakeup import JobEnds, Wakeup
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 4
    lease_s: float = 30.0
    heartbeat_s: float = 1.0
    poll_s: float = 1.0
    claim_batch: int = 64
    claim_rescan_s: float = 0.25  # on PostgreSQL, under a backlog: see `ClaimStart`
    kind_limits: Mapping[str, int] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress_interval_s: float = 0.25
    webhook_progress_interval_s: float = 0.5
    reap_every_s: float = 2.0
    reaps: bool = True  # one reaper per process is enough: a second worker in it (a lane) runs none
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}")


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
        tracer: Tracer | None = None,
        ends: JobEnds | None = None,
    ) -> None:
        self.engine = engine
        self.ends = ends  # told of each outcome written or given up (a parent here waiting on this job wakes)
        self.registry = registry
        self.config = config
        self.wakeup = wakeup
        self.metrics = metrics
        self.kinds = kinds or registry.names
        self.models = models
        self.progress = ProgressBatcher(
            interval_s=config.progress_interval_s,
            webhook_interval_s=config.webhook_progress_interval_s,
            # Both looked up at each call: `write_progress` stays the one seam of every progress write (a wrapper
            # set on the worker sees them all), and `attempts` is built below, with this batcher as its sink.
            write=lambda items: self.write_progress(items),
            lease_lost=lambda job_id: self.attempts.interrupt(job_id, LEASE_LOST),
        )
        self.outcomes = OutcomeRecorder(engine, owner=config.name, policy=config.retry, metrics=metrics)
        if ends is not None:
            ends.owners.add(config.name)
        self.attempts = Attempts(
            registry,
            metrics,
            models=models,
            sink=self.progress,
            finished=self.outcomes.add,
            tracer=tracer,
            slots=config.concurrency,
        )
        self._stopping = False
        self._mean_claim_s: float | None = None  # a running mean of claims that returned jobs
        # Only PostgreSQL keeps claimed jobs' entries in the claim index until a VACUUM (SQLite rewrites its
        # index in place, InnoDB purges them by itself), and a kind's limit makes claims read the whole queue.
        in_place = engine.dialect.name == "postgresql" and not set(self.kinds) & set(config.kind_limits)
        self._claim_start = ClaimStart(config.claim_rescan_s) if in_place else None
        self._loops: list[asyncio.Task[None]] = []
        self._halted = asyncio.Event()

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        self.metrics.active_workers.inc()
        heartbeats.runs_here(self.attempts, asyncio.get_running_loop(), self.engine)
        loops = [self._claim_loop, self._heartbeat_loop, self._complete_loop]
        if self.config.reaps:
            loops.append(self._reap_loop)
        for loop in loops:
            self._loops.append(asyncio.create_task(self._guard(loop), name=f"{self.name}:{loop.__name__}"))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming, let running jobs finish for `grace_s`, then release the rest to the queue.

        Loops are not cancelled but told to halt, so none is cut off inside a database call."""
        self._stopping = True
        heartbeats.gone_from_here(self.attempts)
        self.attempts.slot_freed.set()
        self.wakeup.notify()
        await asyncio.gather(self._loops[0], return_exceptions=True)  # the claim loop sees _stopping
        self.attempts.interrupt_waiting(SHUTDOWN)  # claimed ahead, not started: back to the queue now
        tasks = self.attempts.tasks()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            self.attempts.interrupt_all(SHUTDOWN)
            if pending:
                await asyncio.wait(pending)
        self._halted.set()
        self.progress.close()
        self.outcomes.ready.set()
        _, stuck = await asyncio.wait(self._loops, timeout=max(grace_s, 1.0))
        for task in stuck:  # only a loop hung on an unreachable database gets here
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._record_outcomes()
        self.attempts.threads.close()
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

    async def _claim_loop(self) -> None:
        if self.attempts.result_limit_bytes is None:  # read before any job runs, again after a failed read
            async with db.read(self.engine) as conn:
                self.attempts.result_limit_bytes = await JobStore(conn).json_limit_bytes()
        while not self._stopping:
            limit = self._claim_limit()
            if limit <= 0:
                self.attempts.slot_freed.clear()
                await self.attempts.slot_freed.wait()
                continue
            self.wakeup.clear()
            started_s = time.monotonic()
            claimed = await claim_jobs(
                self.engine,
                owner=self.name,
                kinds=self.kinds,
                limit=limit,
                lease_s=self.config.lease_s,
                kind_limits=self.config.kind_limits,
                start=self._claim_start,
            )
            if claimed:
                claim_s = time.monotonic() - started_s
                self._mean_claim_s = claim_s if self._mean_claim_s is None else 0.9 * self._mean_claim_s + 0.1 * claim_s
                self.progress.rows_written()
                self.attempts.launch(claimed)
            if len(claimed) < limit:
                await self.wakeup.wait(self.config.poll_s)

    def _claim_limit(self) -> int:
        """How many jobs to claim now. Free slots are claimed again at once, while the outcomes of the jobs
        that left them are being written. When attempts end faster than a claim returns (short jobs), the
        next batch is claimed while the current one runs, one batch ahead at most: its jobs wait for their
        slots in the worker (`Attempts`), for about one attempt's time, and the claim's round trip no longer
        stands between batches. Jobs held with their outcome unwritten are capped at `4 * concurrency`: an
        outcome write waits for the disk (~7 ms on PostgreSQL here, more under load), and the outcomes that
        end meanwhile go out together in the next one, so claims go on while writes take longer than claims;
        the cap only stops a worker whose outcomes cannot be written at all."""
        concurrency = self.config.concurrency
        mean_run_s = self.attempts.mean_run_s
        short = mean_run_s is not None and self._mean_claim_s is not None and mean_run_s < self._mean_claim_s
        ahead = min(self.config.claim_batch, concurrency) if short else 0
        unwritten = len(self.attempts) - self.attempts.active
        room = min(concurrency + ahead - self.attempts.active, 4 * concurrency - unwritten)
        return min(room, self.config.claim_batch)

    async def write_progress(self, items: list[ProgressWrite]) -> set[str]:
        """Every progress write of this worker's jobs, batched or not: one transaction; returns the ids of the
        jobs whose lease was lost."""
        return await write_progress(self.engine, self.name, items)

    async def _heartbeat_loop(self) -> None:
        while not self._halted.is_set():
            await self._pause(self.config.heartbeat_s)
            if not self._halted.is_set():
                await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew the leases of this worker's jobs now (`heartbeats.beat`)."""
        await heartbeats.beat(self.engine, self.attempts, self.progress, owner=self.name, lease_s=self.config.lease_s)

    async def _reap_loop(self) -> None:
        statistics = False  # the planner has the jobs table's statistics (`ensure_claim_statistics`)
        while not self._halted.is_set():
            await reap_jobs(self.engine, policy=self.config.retry, metrics=self.metrics)
            if not statistics:
                statistics = await ensure_claim_statistics(self.engine)
            await self._pause(self.config.reap_every_s)

    async def _complete_loop(self) -> None:
        while not self._halted.is_set():
            await self.outcomes.ready.wait()
            self.outcomes.ready.clear()
            await self._record_outcomes()

    async def _record_outcomes(self) -> None:
        try:
            await self.outcomes.write()
        finally:  # what was written before a failure, too
            written = self.outcomes.take_written()
            self.attempts.release(written)
            if self.ends is not None:
                self.ends.ended(written)
