"""The attempts a worker runs: each as a task with its deadline, until its outcome is recorded.

`run_attempt` runs a kind's function once and says how the attempt ended: succeeded, failed (retryable or
not), canceled, released (its worker stops) or lost (another worker owns the job now).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from pydantic import ValidationError

from inferline.clock import utcnow
from inferline.errors import Canceled, JobError, NonRetryable, Retry, shown_message
from inferline.inference.runtime import ModelRuntime
from inferline.inputs import shown_text, unstorable
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, JobContext, ProgressSink, WorkerContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job
from inferline.jobs.outcomes import Outcome
from inferline.metrics import Metrics, observe_all
from inferline.threads import JobThreads, running_jobs
from inferline.tracing import continued_span

log = structlog.get_logger(__name__)
# How long a job claimed ahead may wait for a slot before it goes back to the queue (see `_execute`).
SLOT_WAIT_S = 1.0


@dataclass
class Attempt:
    """A job's attempt in this worker: its context, its task, and the timer of its deadline."""

    ctx: WorkerContext
    task: asyncio.Task[Outcome] | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    started: bool = False  # it has its slot: the job's code may run
    # The end of the lease this worker last wrote for the job (its claim, then each renewal): past it, the
    # reaper may have given the job to another worker. None: not known (a job not claimed through a store).
    lease_expires_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Its task still runs (its outcome may be waiting to be recorded after that)."""
        return self.task is not None and not self.task.done()

    def interrupt(self, reason: str) -> None:
        """Stop the job: its context answers `reason`, its task is cancelled (so `await`s stop at once)."""
        self.ctx.interrupt(reason)
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Attempts:
    """The attempts of this worker, by job id, from the claim until their outcome is recorded (`release`);
    each outcome goes to `finished` as its attempt ends. At most `slots` attempts run at once: one launched
    while all slots are taken (the worker claimed ahead, see `runtime.Worker`) waits for a slot, in claim
    order. The worker claims the next jobs while the last ones' outcomes are being written, and the job
    stays held (its lease renewed) until its outcome is."""

    def __init__(
        self,
        registry: KindRegistry,
        metrics: Metrics,
        *,
        models: ModelRuntime | None,
        sink: ProgressSink,
        finished: Callable[[WorkerContext, Outcome], None],
        tracer: Tracer | None = None,
        slots: int = 4,
    ) -> None:
        self._registry = registry
        self._tracer = tracer or NoOpTracer()
        self._metrics = metrics
        self._models = models
        self._sink = sink
        self._finished = finished
        self.slot_freed = asyncio.Event()
        self._running: dict[str, Attempt] = {}
        self._active = 0
        self._slots = asyncio.Semaphore(slots)
        self.threads = JobThreads(slots)  # the jobs' blocking calls, apart from the requests' (threads.py)
        # The largest result the database takes (`JobStore.json_limit_bytes`), set by the worker as it starts.
        self.result_limit_bytes: int | None = None
        # A running mean of how long attempts hold their slot (the last ~20), for the worker to tell whether
        # slots free up before a claim made now would return; None until one has run.
        self.mean_run_s: float | None = None

    def __len__(self) -> int:
        """Attempts held: running, or ended with their outcome still to be recorded."""
        return len(self._running)

    @property
    def active(self) -> int:
        """Attempts whose task still runs or waits for a slot."""
        return self._active

    def snapshot(self) -> dict[str, Attempt]:
        return dict(self._running)

    def tasks(self) -> list[asyncio.Task[Outcome]]:
        return [attempt.task for attempt in self._running.values() if attempt.task is not None]

    def launch(self, batch: list[Job]) -> None:
        """Start an attempt of each claimed job."""
        queue_wait: dict[str, list[float]] = {}  # observed once per kind and batch
        for job in batch:
            attempt = Attempt(
                WorkerContext(job, self._sink, self._models, self._tracer), lease_expires_at=job.lease_expires_at
            )
            self._running[job.id] = attempt
            if job.attempts == 1 and job.started_at is not None:
                queue_wait.setdefault(job.kind, []).append((job.started_at - job.created_at).total_seconds())
            if job.deadline_at is not None:
                delay_s = max(0.0, (job.deadline_at - utcnow()).total_seconds())
                loop = asyncio.get_running_loop()
                attempt.deadline_timer = loop.call_later(delay_s, attempt.interrupt, "deadline")
            attempt.task = asyncio.create_task(self._execute(attempt), name=f"job:{job.id}")
        self._active += len(batch)  # counted before anything else can raise: the claim limit depends on it
        self._metrics.jobs_running.inc(len(batch))
        for kind, seconds in queue_wait.items():
            observe_all(self._metrics.queue_wait.labels(kind), seconds)

    async def _execute(self, attempt: Attempt) -> Outcome:
        ctx = attempt.ctx
        outcome: Outcome | None = None  # None: torn down by a cancellation that is not ours (lost)
        slot = False
        try:
            # No wait, unless the worker claimed ahead of its free slots. A job that waits longer than
            # SLOT_WAIT_S is behind attempts far longer than those the worker claimed ahead for: it goes
            # back to the queue (its attempt not counted), where an idle worker can take it.
            if self._slots.locked():
                try:
                    await asyncio.wait_for(self._slots.acquire(), SLOT_WAIT_S)
                except TimeoutError:
                    outcome = Outcome("released")
                    return outcome
            else:  # a free slot is taken at once: no timer, no task of wait_for's (~10% of a no-op job's CPU)
                await self._slots.acquire()
            slot = True
            if _lease_lapsed(attempt):
                outcome = Outcome("released")
                return outcome
            attempt.started = True
            started_s = time.monotonic()
            outcome = await self._run(attempt)
            run_s = time.monotonic() - started_s
            self.mean_run_s = run_s if self.mean_run_s is None else 0.95 * self.mean_run_s + 0.05 * run_s
        except asyncio.CancelledError:
            if ctx.cancel_reason is None:
                raise
            outcome = _stopped(ctx)  # stopped while waiting for a slot: canceled, past its deadline, lost
        finally:
            if slot:
                self._slots.release()
            if attempt.deadline_timer is not None:
                attempt.deadline_timer.cancel()
            if outcome is None:
                outcome = Outcome("lost")
            outcome.unwritten = ctx.settle()
            self._active -= 1
            self.slot_freed.set()
            self._finished(ctx, outcome)
        return outcome

    async def _run(self, attempt: Attempt) -> Outcome:
        """The attempt in its slot, in a span of its own."""
        ctx = attempt.ctx
        structlog.contextvars.bind_contextvars(job_id=ctx.id, tenant=ctx.tenant, kind=ctx.job.kind)
        outcome: Outcome | None = None
        # A child of the span that submitted the job (its request, its parent job), wherever that ran.
        span = continued_span(self._tracer, f"job {ctx.job.kind}", ctx.job.trace_parent, SpanKind.CONSUMER)
        recording = span.is_recording()  # not sampled, or no exporter: no attributes to build (a no-op job's 5%)
        if recording:
            span.set_attributes(
                {
                    "inferline.job.id": ctx.id,
                    "inferline.job.kind": ctx.job.kind,
                    "inferline.tenant": ctx.tenant,
                    "inferline.job.attempt": ctx.attempt,
                }
            )
        token = otel_context.attach(set_span_in_context(span))  # `use_span` without its generator's cost
        try:
            with running_jobs(self.threads, ctx.tenant):
                outcome = await run_attempt(self._registry, ctx, result_limit_bytes=self.result_limit_bytes)
        except Exception as exc:  # as `use_span` records: a cancellation is not the job's error
            if recording:
                span.record_exception(exc)
            raise
        finally:
            otel_context.detach(token)
            if recording:
                span.set_attribute("inferline.job.outcome", "lost" if outcome is None else outcome.kind)
                if outcome is not None and outcome.kind == "failed":
                    span.set_status(Status(StatusCode.ERROR, outcome.message or "failed"))
            span.end()
        return outcome

    def interrupt(self, job_id: str, reason: str) -> None:
        attempt = self._running.get(job_id)
        if attempt is not None:
            attempt.interrupt(reason)

    def interrupt_all(self, reason: str) -> None:
        for attempt in list(self._running.values()):
            attempt.interrupt(reason)

    def interrupt_waiting(self, reason: str) -> None:
        """Stop the attempts still waiting for a slot (claimed ahead), before any of their code runs."""
        for attempt in list(self._running.values()):
            if not attempt.started:
                attempt.interrupt(reason)

    def leases_renewed(self, job_ids: Iterable[str], expires_at: datetime) -> None:
        """These jobs' leases were renewed (committed) until `expires_at`."""
        for job_id in job_ids:
            attempt = self._running.get(job_id)
            if attempt is not None:
                attempt.lease_expires_at = expires_at

    def release(self, job_ids: list[str]) -> None:
        """Their outcomes are recorded: they are no longer held."""
        if not job_ids:
            return
        running = self._running
        released = 0
        for job_id in job_ids:
            if running.pop(job_id, None) is not None:
                released += 1
        self._metrics.jobs_running.dec(released)
        self.slot_freed.set()


def _lease_lapsed(attempt: Attempt) -> bool:
    """The job waited for its slot past the lease this worker last wrote (its heartbeats failed meanwhile):
    another worker may be running it already, so this attempt must not start. It is given back as a
    stopping worker gives a job back (`released`: the attempt not counted), which writes nothing where
    the reaper or another worker has the job now (the write requires this worker's lease)."""
    expires_at = attempt.lease_expires_at
    if expires_at is None or utcnow() < expires_at:
        return False
    log.warning("job_lease_lapsed_before_start", job_id=attempt.ctx.id, lease_expires_at=expires_at.isoformat())
    return True


async def run_attempt(registry: KindRegistry, ctx: JobContext, *, result_limit_bytes: int | None = None) -> Outcome:
    """Run the job's kind once; how it ended. A cancellation that is not the job's own (no `cancel_reason`)
    propagates. A result over `result_limit_bytes` fails the job (`_succeeded`)."""
    try:
        kind = registry.get(ctx.job.kind)
        result = await kind.func(ctx, kind.parse(ctx.job.input))
        if ctx.cancel_reason is not None:
            return _stopped(ctx)
        return _succeeded(result if result is not None else {}, result_limit_bytes)
    except (asyncio.CancelledError, Canceled):
        if ctx.cancel_reason is None:
            raise
        return _stopped(ctx)
    except Exception as exc:
        if ctx.cancel_reason is not None:  # a job canceled while failing is canceled, never retried
            return _stopped(ctx)
        return _failed(ctx, exc)


def _succeeded(result: dict[str, Any], limit_bytes: int | None) -> Outcome:
    """A result that cannot be stored fails its job for good: the same code would return it again. Written,
    it would fail the write of the whole batch of outcomes, for as long as the worker tried."""
    problem = unstorable(result, "result", max_bytes=limit_bytes)
    if problem is not None:
        log.info("job_result_unstorable", problem=problem)
        return Outcome("failed", error_type="UnstorableResult", message=shown_text(problem), retryable=False)
    return Outcome("succeeded", result=result)


def _stopped(ctx: JobContext) -> Outcome:
    reason = ctx.cancel_reason or "canceled"
    if reason == LEASE_LOST:
        return Outcome("lost")
    if reason == SHUTDOWN:
        return Outcome("released")
    return Outcome("canceled", message=reason)


def _shown(ctx: JobContext, exc: Exception) -> str:
    """The failure as the tenant reads it (the log above has its full text). A ValidationError is
    shown as the field and the rule it breaks, without the values pydantic's own text repeats."""
    if not isinstance(exc, ValidationError):
        return shown_message(exc, reference=f"job {ctx.id}")
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "input"
    return f"{where}: {first['msg']}"


def _failed(ctx: JobContext, exc: Exception) -> Outcome:
    retryable = not isinstance(exc, NonRetryable | ValidationError)
    if retryable and not isinstance(exc, JobError):
        log.exception("job_attempt_crashed", attempt=ctx.attempt, error=str(exc))  # tenants see only its type
    else:
        log.info("job_attempt_failed", attempt=ctx.attempt, error=str(exc), retryable=retryable)
    after_s = exc.after_s if isinstance(exc, Retry) else None
    return Outcome(
        "failed",
        error_type=type(exc).__name__,
        message=shown_text(_shown(ctx, exc)),
        retryable=retryable,
        after_s=after_s,
    )
