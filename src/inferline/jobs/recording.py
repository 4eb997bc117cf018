"""The outcomes of a worker's finished attempts, written in batches: all that finished since the last write go
out in one transaction (`outcomes.record_outcomes`)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.jobs.context import WorkerContext
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import Outcome, record_outcomes
from inferline.metrics import Metrics


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
                await record_outcomes(
                    self.engine,
                    owner=self.owner,
                    items=[(ctx.job, outcome) for ctx, outcome in batch],
                    policy=self.policy,
                    metrics=self.metrics,
                )
            except Exception:
                self._batch[:0] = batch
                self.ready.set()
                raise
            return [ctx.id for ctx, _ in batch]
