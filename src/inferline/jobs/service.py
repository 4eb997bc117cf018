"""Use cases of the job core. Each opens and commits its own transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import IdempotencyConflict, InvalidInput, NotFound
from inferline.ids import new_id
from inferline.jobs import webhooks
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, WebhookEvent
from inferline.jobs.store import JobStore
from inferline.jobs.wakeup import Wakeup


@dataclass(frozen=True)
class JobRequest:
    kind: str
    input: dict[str, Any]
    priority: int = 3
    max_attempts: int | None = None
    deadline_s: float | None = None
    webhook: str | None = None
    webhook_events: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of what was asked, to tell a repeated request from a different one under one key."""
        canonical = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def new_job(request: JobRequest, *, tenant: str, now: datetime, default_max_attempts: int) -> Job:
    deadline_at = None if request.deadline_s is None else now + timedelta(seconds=request.deadline_s)
    return Job(
        id=new_id(),
        kind=request.kind,
        tenant=tenant,
        status=JobStatus.QUEUED,
        priority=request.priority,
        max_attempts=request.max_attempts or default_max_attempts,
        input=request.input,
        created_at=now,
        updated_at=now,
        run_after=now,
        deadline_at=deadline_at,
        webhook=request.webhook,
        webhook_events=list(request.webhook_events),
    )


async def submit_job(
    engine: AsyncEngine,
    registry: KindRegistry,
    request: JobRequest,
    *,
    tenant: str,
    default_max_attempts: int,
    idempotency_key: str | None = None,
    wakeup: Wakeup | None = None,
    schedule_id: str | None = None,
) -> tuple[Job, bool]:
    """Queue a job. Returns (job, created); with an idempotency key seen before, the existing job."""
    validated = registry.validate_input(request.kind, request.input)
    if request.webhook_events and not request.webhook:
        raise InvalidInput("webhook_events given without a webhook URL", field="webhook")
    request = JobRequest(**(request.__dict__ | {"input": validated}))
    fingerprint = request.fingerprint() if idempotency_key else None
    job = new_job(request, tenant=tenant, now=utcnow(), default_max_attempts=default_max_attempts)
    job = Job(
        **(
            job.__dict__
            | {
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "schedule_id": schedule_id,
            }
        )
    )
    try:
        async with engine.begin() as conn:
            store = JobStore(conn)
            if idempotency_key and (existing := await store.get_by_idempotency_key(tenant, idempotency_key)):
                return _same_request(existing, fingerprint), False
            job = await store.add(job)
    except sa.exc.IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert; answer as if we had come second.
        async with db.read(engine) as conn:
            existing = await JobStore(conn).get_by_idempotency_key(tenant, idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False
    if wakeup is not None:
        wakeup.notify()
    return job, True


def _same_request(existing: Job, fingerprint: str | None) -> Job:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key was already used for job {existing.id} with a different request body"
        )
    return existing


async def get_job(engine: AsyncEngine, *, tenant: str, job_id: str) -> Job:
    async with db.read(engine) as conn:
        job = await JobStore(conn).get(job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


async def list_jobs(
    engine: AsyncEngine,
    *,
    tenant: str,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    async with db.read(engine) as conn:
        return await JobStore(conn).page(tenant=tenant, status=status, kind=kind, limit=limit, cursor=cursor)


async def cancel_job(engine: AsyncEngine, *, tenant: str, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker sees it within a heartbeat)."""
    now = utcnow()
    async with engine.begin() as conn:
        store = JobStore(conn)
        job = await store.get(job_id, tenant=tenant, lock=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        updated = job.cancel(now)
        await store.save(updated, expect_status=job.status)
        if updated.status is JobStatus.CANCELED:
            await webhooks.enqueue(conn, updated, WebhookEvent.COMPLETED, now)
    return updated


async def retry_job(engine: AsyncEngine, *, tenant: str, job_id: str, wakeup: Wakeup | None = None) -> Job:
    async with engine.begin() as conn:
        store = JobStore(conn)
        job = await store.get(job_id, tenant=tenant, lock=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        requeued = await store.requeue(job.retry(utcnow()))
    if wakeup is not None:
        wakeup.notify()
    return requeued


async def claim_jobs(
    engine: AsyncEngine,
    *,
    owner: str,
    kinds: Sequence[str],
    limit: int,
    lease_s: float,
    kind_limits: Mapping[str, int],
) -> list[Job]:
    now = utcnow()
    async with engine.begin() as conn:
        claimed = await JobStore(conn).claim(
            owner=owner, kinds=kinds, limit=limit, now=now, lease_s=lease_s, kind_limits=kind_limits
        )
        for job in claimed:
            await webhooks.enqueue(conn, job, WebhookEvent.START, now)
    return claimed


async def queue_depth(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with db.read(engine) as conn:
        return await JobStore(conn).queue_depth()
