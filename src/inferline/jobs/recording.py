"""The outcomes of a worker's finished attempts, written in batches: all that finished since the last write go
out in one transaction (`outcomes.record_outcomes`).

A batch the database refuses twice in a row is written one outcome at a time: one job's outcome the
database cannot take (a value no check foresaw, a trigger that refuses it) would otherwise hold every
other job's outcome of this worker with it, for as long as the worker tried. An outcome refused alone is
tried once more, then written without what could be the cause: a success becomes a failed attempt naming
the error (retried as any failure, so a passing cause costs one attempt), any other outcome loses the
stage or progress it had left unwritten. One refused even so is given up (logged as an error): the worker
stops holding the job, whose lease then lapses, and the reaper takes it as a dead worker's. Whenever the
database is unavailable (`db.unavailable`: not counted as a refusal) the batch stays for the next try."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.jobs.context import WorkerContext
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import Outcome, record_outcomes
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)
# Refused writes of a batch in a row before its outcomes are written one at a time (a database that
# restarts refuses one batch; a poisoned outcome refuses every try).
ISOLATE_AFTER_REFUSALS = 2
RETRY_ALONE_S = 0.5


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
        self._written: list[str] = []  # ids of outcomes written (or given up), until `take_written`

    def add(self, ctx: WorkerContext, outcome: Outcome) -> None:
        self._batch.append((ctx, outcome))
        self.ready.set()

    async def write(self) -> None:
        """Write the waiting outcomes; the ids of those written are kept for `take_written`, even when the
        write then fails. A batch that fails to write is kept (and its leases, renewed by heartbeats) for
        the next try, and the error raised; refused twice in a row (the database answering), its outcomes
        are written one at a time (module doc)."""
        async with self._lock:
            batch, self._batch = self._batch, []
            if not batch:
                return
            try:
                for ctx, _ in batch:
                    await ctx.writes_done()  # even when none is in flight now: one may wait to take the lock
                await self._record(batch)
            except BaseException as exc:
                if not isinstance(exc, Exception) or db.unavailable(exc):
                    self._keep(batch)
                    raise
                self._refusals += 1
                if self._refusals < ISOLATE_AFTER_REFUSALS:
                    self._keep(batch)
                    raise
                self._refusals = 0
                kept = await self._record_one_by_one(batch)
                if kept:
                    self._keep(kept)
                    raise
                return
            self._refusals = 0
            self._written += [ctx.id for ctx, _ in batch]

    def take_written(self) -> list[str]:
        """The job ids whose outcomes were written (or given up: `_record_one_by_one`) since the last call:
        the worker holds them no longer."""
        written, self._written = self._written, []
        return written

    def _keep(self, items: list[tuple[WorkerContext, Outcome]]) -> None:
        self._batch[:0] = items
        self.ready.set()

    async def _record(self, batch: list[tuple[WorkerContext, Outcome]]) -> None:
        items = [(ctx.job, outcome) for ctx, outcome in batch]
        await record_outcomes(self.engine, owner=self.owner, items=items, policy=self.policy, metrics=self.metrics)

    async def _record_one_by_one(
        self, batch: list[tuple[WorkerContext, Outcome]]
    ) -> list[tuple[WorkerContext, Outcome]]:
        """Each outcome written alone (`_record_alone`); returns those not written, from the first the
        database is unavailable for on (each further try would only wait for it). One refused even stripped
        is given up: its attempt is released unwritten, so its lease lapses and the reaper takes the job
        (held, it would join every later batch and have it refused twice, for ever). A cancellation keeps
        the rest untried."""
        for index, (ctx, outcome) in enumerate(batch):
            try:
                written = await self._record_alone(ctx, outcome)
            except BaseException:
                self._keep(batch[index:])
                raise
            if written is None:
                return batch[index:]
            if not written:
                log.error("job_outcome_given_up", job_id=ctx.id, outcome=outcome.kind)
            self._written.append(ctx.id)
        return []

    async def _record_alone(self, ctx: WorkerContext, outcome: Outcome) -> bool | None:
        """The outcome written alone, tried twice, RETRY_ALONE_S apart; refused both times, it is written without
        what could be the cause (`_stripped`). True: written; False: refused even so; None: the database is
        unavailable."""
        refusal: Exception | None = None
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(RETRY_ALONE_S)  # a lock wait or a statement timeout under load may pass
            try:
                await self._record([(ctx, outcome)])
                return True
            except Exception as exc:
                if db.unavailable(exc):
                    return None
                refusal = exc
        log.warning("job_outcome_refused", job_id=ctx.id, outcome=outcome.kind, error=repr(refusal)[:1000])
        stripped = _stripped(outcome, refusal)
        if stripped is None:
            return False
        try:
            await self._record([(ctx, stripped)])
        except Exception as exc:
            return None if db.unavailable(exc) else False
        return True


def _stripped(outcome: Outcome, refusal: Exception | None) -> Outcome | None:
    """The outcome without what the database may be refusing: the stage, detail or progress left unwritten,
    and a success's result (the attempt then fails, retried as any failure: `OutcomeNotWritten`). None when
    nothing is left to strip."""
    if outcome.kind == "succeeded":
        return Outcome(
            "failed",
            error_type="OutcomeNotWritten",
            message=f"the database refused this attempt's result ({type(refusal).__name__})",
        )
    if not outcome.unwritten:
        return None
    return replace(outcome, unwritten={})
