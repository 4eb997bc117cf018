"""Writing the end of attempts: outcomes of live workers, and expired leases of dead ones."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.events import outbox
from inferline.jobs import webhooks
from inferline.jobs.model import JSON, Job, JobStatus, RetryPolicy, WebhookEvent, canceled_fields, plan_failure
from inferline.jobs.store import JobStore
from inferline.metrics import Metrics, observe_all

_LEASE_CLEARED = {"lease_owner": None, "lease_expires_at": None}


@dataclass
class Outcome:
    kind: Literal["succeeded", "failed", "canceled", "released", "lost"]
    result: JSON | None = None
    error_type: str = ""
    message: str = ""
    retryable: bool = True
    after_s: float | None = None
    # Stage, detail or progress the attempt reported but had not written yet: written with the outcome.
    unwritten: dict[str, Any] = field(default_factory=dict)


def succeeded(job: Job, result: JSON | None, now: datetime) -> dict[str, Any]:
    return {
        "status": JobStatus.SUCCEEDED,
        "result": result,
        "progress": 100.0,
        "finished_at": now,
        "updated_at": now,
        **_LEASE_CLEARED,
    }


def failed(job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy) -> dict[str, Any]:
    plan = plan_failure(
        job,
        error_type=outcome.error_type,
        message=outcome.message,
        retryable=outcome.retryable,
        now=now,
        policy=policy,
        after_s=outcome.after_s,
    )
    values: dict[str, Any] = {"status": plan.status, "error": plan.error, "updated_at": now, **_LEASE_CLEARED}
    if plan.status is JobStatus.FAILED:
        return values | {"finished_at": now, "detail": outcome.message}
    return values | {"run_after": plan.run_after, "detail": f"attempt {job.attempts} failed; retrying"}


def released(job: Job, now: datetime) -> dict[str, Any]:
    """A worker shutting down gives the job back; the interrupted attempt does not count."""
    return {
        "status": JobStatus.QUEUED,
        "attempts": max(job.attempts - 1, 0),
        "run_after": now,
        "updated_at": now,
        **_LEASE_CLEARED,
    }


async def give_back(engine: AsyncEngine, owner: str, jobs: list[Job]) -> None:
    """Put claimed jobs that never ran back in the queue, as a stopping worker does (`released`)."""
    now = utcnow()
    async with db.write(engine) as conn:
        await JobStore(conn).finish_running(owner, [(job, _columns(released(job, now))) for job in jobs], now)


async def record_outcomes(
    engine: AsyncEngine,
    *,
    owner: str,
    items: list[tuple[Job, Outcome]],
    policy: RetryPolicy,
    metrics: Metrics,
) -> None:
    """Write a batch of finished attempts in one transaction; a row whose lease was lost is skipped."""
    now = utcnow()
    # A failing attempt reads its job's cancel request under the row's lock; every row of the batch is
    # then locked up front, in id order (see store.py).
    failing = any(outcome.kind == "failed" for _, outcome in items)
    if not failing and _one_statement(engine, items):
        planned = _planned(items, now, policy, {})
        rows = [(job, _columns(values)) for job, _, values in planned]
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            applied = await JobStore(conn).finish_running(owner, rows, now)
        _observe_finished(metrics, [(job, values) for job, _, values in planned if job.id in applied])
        return
    finished: list[tuple[Job, dict[str, Any]]] = []
    async with db.write(engine) as conn:
        store = JobStore(conn)
        live = (job.id for job, outcome in items if outcome.kind != "lost")
        cancel_requested = await store.lock_rows(live) if failing else {}
        planned = _planned(items, now, policy, cancel_requested)
        rows = [(job, _columns(values)) for job, _, values in planned]
        applied = await store.finish_running(owner, rows, now, locked=failing)
        for job, outcome, values in planned:
            if job.id not in applied:
                continue
            if outcome.kind == "failed":
                metrics.attempts_failed.labels(job.kind).inc()
            await _maybe_finished(conn, job, values, now, finished)
    _observe_finished(metrics, finished)


def _one_statement(engine: AsyncEngine, items: list[tuple[Job, Outcome]]) -> bool:
    """The batch's ends can be written by one statement, committed on its own (no BEGIN and COMMIT round
    trips): PostgreSQL, no events to write with them, no webhook to enqueue, and one set of columns (the
    outcomes of one kind, with no stage or progress left unwritten that others lack)."""
    if engine.dialect.name != "postgresql" or engine.get_execution_options().get(outbox.EVENTS_OPTION, False):
        return False
    kind = None
    for job, outcome in items:
        if job.webhook is not None or outcome.unwritten:
            return False
        if outcome.kind != "lost":
            if kind is not None and outcome.kind != kind:
                return False
            kind = outcome.kind
    return True


def _planned(
    items: list[tuple[Job, Outcome]], now: datetime, policy: RetryPolicy, cancel_requested: dict[str, bool]
) -> list[tuple[Job, Outcome, dict[str, Any]]]:
    planned = []
    for job, outcome in items:
        values = _values_for(job, outcome, now, policy, cancel_requested.get(job.id, False))
        if values is not None:
            planned.append((job, outcome, outcome.unwritten | values if outcome.unwritten else values))
    return planned


def _values_for(
    job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy, cancel_requested: bool
) -> dict[str, Any] | None:
    if outcome.kind == "succeeded":
        return succeeded(job, outcome.result, now)
    if outcome.kind == "canceled":
        return canceled_fields(outcome.message, now)
    if outcome.kind == "released":
        return released(job, now)
    if outcome.kind == "failed":
        # A cancel asked for while this attempt was failing wins: canceled jobs are never retried.
        if cancel_requested:
            return canceled_fields("canceled", now)
        return failed(job, outcome, now, policy)
    return None  # lost: another worker owns the job now


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """The values as the row's columns: the status as its text (the one enum an end writes)."""
    status = values.get("status")
    return values | {"status": status.value} if isinstance(status, JobStatus) else dict(values)


def _observe_finished(metrics: Metrics, finished: list[tuple[Job, dict[str, Any]]]) -> None:
    """Count the jobs (as claimed, and the values their end wrote) that ended for good."""
    counts: dict[tuple[str, str], int] = {}
    durations: dict[tuple[str, str], list[float]] = {}  # observed once per kind, status and batch
    for job, values in finished:
        status = values["status"]
        if not status.is_terminal:  # the one-statement path passes every end it wrote
            continue
        key = (job.kind, status.value)
        counts[key] = counts.get(key, 0) + 1
        started_at = values.get("started_at", job.started_at)
        if started_at is not None and values.get("finished_at") is not None:
            durations.setdefault(key, []).append((values["finished_at"] - started_at).total_seconds())
    for key, seconds in durations.items():
        observe_all(metrics.job_duration.labels(*key), seconds)
    for key, count in counts.items():
        metrics.jobs_finished.labels(*key).inc(count)


async def reap_jobs(engine: AsyncEngine, *, policy: RetryPolicy, metrics: Metrics, now: datetime | None = None) -> int:
    """Take back jobs whose worker died (lease expired) and cancel queued jobs past their deadline, as
    of `now` (default: the current time)."""
    now = now or utcnow()
    finished: list[tuple[Job, dict[str, Any]]] = []
    async with db.write(engine) as conn:
        store = JobStore(conn)
        expired = await store.expired_leases(now)
        for job in expired:
            metrics.lease_expiries.labels(job.kind).inc()
            values = _after_expiry(job, now, policy)
            if await store.end_expired(job, _columns(values)):
                await _maybe_finished(conn, job, values, now, finished)
        overdue = await store.overdue_queued(now)
        for job in overdue:
            values = canceled_fields("deadline", now)
            if await store.save(replace(job, **values), expect_status=JobStatus.QUEUED):
                await _maybe_finished(conn, job, values, now, finished)
    _observe_finished(metrics, finished)
    return len(expired) + len(overdue)


def _after_expiry(job: Job, now: datetime, policy: RetryPolicy) -> dict[str, Any]:
    if job.cancel_requested:
        return canceled_fields("canceled", now)
    if job.deadline_passed(now):
        return canceled_fields("deadline", now)
    lost = Outcome("failed", error_type="LeaseExpired", message="the worker stopped renewing its lease", after_s=0.0)
    return failed(job, lost, now, policy)


async def _maybe_finished(
    conn: AsyncConnection, job: Job, values: dict[str, Any], now: datetime, finished: list[tuple[Job, dict[str, Any]]]
) -> None:
    """A job whose end wrote `values` over it: if it ended for good, counted and its webhook enqueued."""
    if values["status"].is_terminal:
        finished.append((job, values))
        if job.wants(WebhookEvent.COMPLETED):
            await webhooks.enqueue(conn, replace(job, **values), WebhookEvent.COMPLETED, now)
