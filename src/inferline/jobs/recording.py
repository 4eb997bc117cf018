"""The outcomes of a worker's finished attempts, written in batches: all that finished since the last write go
out in one transaction (`outcomes.record_outcomes`).

A batch the database refuses twice in a row is written one outcome at a time: one job's outcome the
database cannot take (a value no check foresaw, a trigger that refuses it) would otherwise hold every
other job's outcome of this worker with it, for as long as the worker tried. An outcome refused alone is
replaced by a failed attempt naming the error (retried as any failure, so a passing cause costs one
attempt); one whose failure is refused too stays for the next try, as the whole batch does when the
database is down."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.jobs.context import WorkerContext
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import Outcome, record_outcomes
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)
# Refused writes of a batch in a row before its outcomes are written one at a time (a database that
# restarts refuses one batch; a poisoned outcome refuses every try).
ISOLATE_AFTER_REFUSALS = 2


class OutcomeRecorder:
    """Takes each finished attempt's outcome (`add`) and writes those waiting in one transaction (`write`)."""

    def __init__(self, engine: AsyncEngine, *, owner: str, policy: RetryPolicy, metrics: Metrics) -> None:
        self.engine = engine
        self.owner = owner
        self.policy = policy
        self.metrics = metrics
        self.ready = asyncio.Event()  # an outcome waits to be written
        self._batch: list[tuple[WorkerContext, Outcome]] = []
        self._lock = asyncio.Lock()
        self._refusals = 0  # writes refused in a row

    def add(self, ctx: WorkerContext, outcome: Outcome) -> None:
        self._batch.append((ctx, outcome))
        self.ready.set()

    async def write(self) -> list[str]:
        """Write the waiting outcomes; returns their job ids. A batch that fails to write is kept (and its
        leases, renewed by heartbeats) for the next try, and the error raised."""
        async with self._lock:
            batch, self._batch = self._batch, []
            if not batch:
                return []
            try:
                for ctx, _ in batch:
                    await ctx.writes_done()
                await self._record(batch)
            except Exception:
                self._refusals += 1
                if self._refusals < ISOLATE_AFTER_REFUSALS:
                    self._batch[:0] = batch
                    self.ready.set()
                    raise
                self._refusals = 0
                kept = await self._record_one_by_one(batch)
                if kept:
                    self._batch[:0] = kept
                    self.ready.set()
                    raise
                return [ctx.id for ctx, _ in batch]
            self._refusals = 0
            return [ctx.id for ctx, _ in batch]

    async def _record(self, batch: list[tuple[WorkerContext, Outcome]]) -> None:
        items = [(ctx.job, outcome) for ctx, outcome in batch]
        await record_outcomes(self.engine, owner=self.owner, items=items, policy=self.policy, metrics=self.metrics)

    async def _record_one_by_one(
        self, batch: list[tuple[WorkerContext, Outcome]]
    ) -> list[tuple[WorkerContext, Outcome]]:
        """Each outcome written alone; one refused becomes a failed attempt naming the error. Returns those
        not written: from the first whose failure is refused too on (the database refuses everything: each
        further try would only wait for it)."""
        for index, (ctx, outcome) in enumerate(batch):
            try:
                await self._record([(ctx, outcome)])
                continue
            except Exception as exc:
                log.warning("job_outcome_refused", job_id=ctx.id, outcome=outcome.kind, error=repr(exc)[:1000])
                failure = Outcome(
                    "failed",
                    error_type="OutcomeNotWritten",
                    message=f"the database refused this attempt's {outcome.kind} outcome ({type(exc).__name__})",
                )
            try:
                await self._record([(ctx, failure)])
            except Exception:
                return batch[index:]
        return []
