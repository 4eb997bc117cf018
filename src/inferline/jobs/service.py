"""Use cases of the job core. Each opens and commits its own transaction."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from inferline.jobs.store import JobStore, add_jobs_sync
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


def validated_request(registry: KindRegistry, request: JobRequest) -> JobRequest:
    """The request with its input checked and completed by the kind's model (422s name the field)."""
    if request.webhook_events and not request.webhook:
        raise InvalidInput("webhook_events given without a webhook URL", field="webhook")
    return replace(request, input=registry.validate_input(request.kind, request.input))


def prepare_job(
    registry: KindRegistry,
    request: JobRequest,
    *,
    tenant: str,
    default_max_attempts: int,
    idempotency_key: str | None = None,
) -> Job:
    """Validate a submission and build its queued job."""
    request = validated_request(registry, request)
    job = new_job(request, tenant=tenant, now=utcnow(), default_max_attempts=default_max_attempts)
    if idempotency_key is None:
        return job
    return replace(job, idempotency_key=idempotency_key, request_hash=request.fingerprint())


async def submit_job(
    engine: AsyncEngine,
    registry: KindRegistry,
    request: JobRequest,
    *,
    tenant: str,
    default_max_attempts: int,
    idempotency_key: str | None = None,
    wakeup: Wakeup | None = None,
) -> tuple[Job, bool]:
    """Queue a job. Returns (job, created); with an idempotency key seen before, the existing job."""
    job = prepare_job(
        registry,
        request,
        tenant=tenant,
        default_max_attempts=default_max_attempts,
        idempotency_key=idempotency_key,
    )
    try:
        async with db.write(engine) as conn:
            store = JobStore(conn)
            if idempotency_key and (existing := await store.get_by_idempotency_key(tenant, idempotency_key)):
                return _same_request(existing, job.request_hash), False
            [job] = await store.add([job])
    except sa.exc.IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert; answer as if we had come second.
        async with db.read(engine) as conn:
            existing = await JobStore(conn).get_by_idempotency_key(tenant, idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, job.request_hash), False
    if wakeup is not None:
        wakeup.notify()
    return job, True


@dataclass
class _PendingJob:
    job: Job
    future: asyncio.Future[Job]


class Submitter:
    """Group commit for submissions: jobs submitted while a write is in flight share the next
    transaction. One transaction per job spent ~16 driver round trips each on SQLite; batched, the
    cost is paid once per batch (docs/benchmarks.md). Idempotent submissions take the single path,
    which checks the key and the insert under one lock."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: KindRegistry,
        *,
        default_max_attempts: int,
        wakeup: Wakeup | None = None,
        max_batch: int = 500,
        sqlite_writer: db.SqliteWriter | None = None,
    ) -> None:
        self.engine = engine
        self.sqlite_writer = sqlite_writer
        self.registry = registry
        self.default_max_attempts = default_max_attempts
        self.wakeup = wakeup
        self.max_batch = max_batch
        self._pending: list[_PendingJob] = []
        self._flusher: asyncio.Task[None] | None = None

    def prepare(self, request: JobRequest, *, tenant: str) -> Job:
        """A job to insert with `JobStore.add` in the caller's own transaction (a document and its ingest
        job commit together); call `submitted()` after the commit."""
        return prepare_job(self.registry, request, tenant=tenant, default_max_attempts=self.default_max_attempts)

    def submitted(self) -> None:
        if self.wakeup is not None:
            self.wakeup.notify()

    async def submit(self, request: JobRequest, *, tenant: str, idempotency_key: str | None = None) -> tuple[Job, bool]:
        if idempotency_key is not None:
            return await submit_job(
                self.engine,
                self.registry,
                request,
                tenant=tenant,
                default_max_attempts=self.default_max_attempts,
                idempotency_key=idempotency_key,
                wakeup=self.wakeup,
            )
        job = prepare_job(self.registry, request, tenant=tenant, default_max_attempts=self.default_max_attempts)
        pending = _PendingJob(job, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a client that hangs up does not take its job out of a batch being written.
        return await asyncio.shield(pending.future), True

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                placed = await self._insert([item.job for item in batch])
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.wakeup is not None:
                self.wakeup.notify()
            for item, job in zip(batch, placed, strict=True):
                if not item.future.done():
                    item.future.set_result(job)

    async def _insert(self, batch: list[Job]) -> list[Job]:
        if self.sqlite_writer is not None:  # one thread hop for the whole transaction
            return await self.sqlite_writer.run(lambda conn: add_jobs_sync(conn, batch))
        async with db.write(self.engine) as conn:
            return await JobStore(conn).add(batch)


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
    async with db.write(engine) as conn:
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
    async with db.write(engine) as conn:
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
    async with db.write(engine) as conn:
        claimed = await JobStore(conn).claim(
            owner=owner, kinds=kinds, limit=limit, now=now, lease_s=lease_s, kind_limits=kind_limits
        )
        for job in claimed:
            await webhooks.enqueue(conn, job, WebhookEvent.START, now)
    return claimed


async def queue_depth(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with db.read(engine, slow=True) as conn:  # counts every queued job
        return await JobStore(conn).queue_depth()
