"""Creating jobs: the only two ways in.

- `Submitter.submit(request, tenant=...)`: a plain submission (the API's `POST /jobs`, a workload's own
  submit route). Jobs submitted while a write is in flight share the next transaction.
- `Submitter.transaction()`: a workload's own rows and their jobs in one transaction, so neither is
  ever there without the other (a document and its ingest job, a schedule's tick and its job):

      async with submitter.transaction() as tx:
          await tx.conn.execute(documents.insert(), row)
          job = await tx.add(JobRequest(kind="ingest", input={...}), tenant=tenant)

Both validate the input against the kind's model (a 422 names the field), and once committed wake the
workers and count the submissions, here and nowhere else. A submission whose input names tenant files (its
kind's `FileId` fields, files/refs.py) is inserted holding them and listed in `job_files`, where a file's
delete looks: a file deleted first is a 404, never a queued job naming bytes that are gone
(files/store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import IdempotencyConflict, InvalidInput
from inferline.files.store import hold_files
from inferline.ids import new_id
from inferline.inputs import refuse_unstorable_text
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus
from inferline.jobs.store import JobStore, add_jobs_sync
from inferline.jobs.wakeup import JobEnds, Wakeup
from inferline.metrics import Metrics
from inferline.outbound import OutboundPolicy
from inferline.schema import job_files
from inferline.tracing import current_traceparent

# Idempotency keys are unique per tenant, and the server keys jobs of its own (a schedule's tick) in the
# same index: those start with this prefix, which a tenant's key may not, so no tenant can take a key the
# server will need.
SERVER_KEY_PREFIX = "inferline:"
MAX_IDEMPOTENCY_KEY_CHARS = 200
_TENANT_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")


def tenant_idempotency_key(key: str, *, field: str = "idempotency_key") -> str:
    """`key` if a tenant may use it: 1 to 200 printable ASCII characters, outside the server's prefix."""
    if not _TENANT_KEY.fullmatch(key):
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters", field=field
        )
    if key.startswith(SERVER_KEY_PREFIX):
        raise InvalidInput(f"Idempotency-Key may not start with {SERVER_KEY_PREFIX!r} (reserved)", field=field)
    return key


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
    """The queued job for a request, unvalidated: what `Submitter` inserts once it has checked it."""
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
        trace_parent=current_traceparent(),  # its attempts continue the trace of whoever submitted it
    )


def validated_request(registry: KindRegistry, request: JobRequest) -> JobRequest:
    """The request with its input checked and completed by the kind's model (422s name the field)."""
    if request.webhook_events and not request.webhook:
        raise InvalidInput("webhook_events given without a webhook URL", field="webhook")
    refuse_unstorable_text(request.input, "input")
    refuse_unstorable_text(request.webhook or "", "webhook")
    return replace(request, input=registry.validate_input(request.kind, request.input))


async def check_webhook(outbound: OutboundPolicy, request: JobRequest, *, tenant: str) -> None:
    """The request's webhook URL resolves to addresses the server may call (else a 422 naming
    `webhook`). Every send checks it again; this check gives the error to the one who asked."""
    if request.webhook is not None:
        await outbound.resolve(request.webhook, field="webhook", tenant=tenant)


@dataclass
class _PendingJob:
    job: Job
    future: asyncio.Future[Job]


class JobTransaction:
    """One write transaction of `Submitter.transaction()`: the workload's statements go to `conn`, its
    jobs to `add`."""

    def __init__(self, conn: AsyncConnection, submitter: Submitter) -> None:
        self.conn = conn
        self.jobs: list[Job] = []
        self._submitter = submitter

    async def add(
        self,
        request: JobRequest,
        *,
        tenant: str,
        idempotency_key: str | None = None,
        schedule_id: str | None = None,
        now: datetime | None = None,
    ) -> Job:
        """Validate and insert one job in this transaction. An `idempotency_key` given here is the server's
        own (it starts with `SERVER_KEY_PREFIX`); a key already taken raises IntegrityError."""
        if idempotency_key is not None and not idempotency_key.startswith(SERVER_KEY_PREFIX):
            raise ValueError(f"a server key starts with {SERVER_KEY_PREFIX!r}: {idempotency_key!r}")
        job = self._submitter.build(request, tenant=tenant, now=now)
        job = replace(job, idempotency_key=idempotency_key, schedule_id=schedule_id)
        [job] = await _add_holding_files(self.conn, self._submitter.registry, [job])
        self.jobs.append(job)
        return job


class Submitter:
    """Creates every job (see the module docstring). Plain submissions use group commit: one
    transaction per job spent ~16 driver round trips each on SQLite; batched, the cost is paid once per
    batch (docs/benchmarks.md). Idempotent submissions take a single path, which checks the key and
    inserts under one lock."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: KindRegistry,
        *,
        default_max_attempts: int,
        wakeup: Wakeup | None = None,
        metrics: Metrics | None = None,
        max_batch: int = 500,
        sqlite_writer: db.SqliteWriter | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.outbound = outbound or OutboundPolicy()
        self.default_max_attempts = default_max_attempts
        self.wakeup = wakeup
        # The ends of jobs that this process's workers write (`Background` gives it to them): what waits on
        # jobs it submitted (a parent on its children) is woken by them.
        self.ends = JobEnds()
        self.metrics = metrics
        self.max_batch = max_batch
        self.sqlite_writer = sqlite_writer
        self._pending: list[_PendingJob] = []
        self._flusher: asyncio.Task[None] | None = None

    def build(self, request: JobRequest, *, tenant: str, now: datetime | None = None) -> Job:
        """The validated, queued job for a request, not yet inserted."""
        request = validated_request(self.registry, request)
        return new_job(request, tenant=tenant, now=now or utcnow(), default_max_attempts=self.default_max_attempts)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[JobTransaction]:
        """A write transaction for a workload's rows and the jobs `tx.add` creates; committed when the
        block ends without an error, after which the workers are woken."""
        async with db.write(self.engine) as conn:
            tx = JobTransaction(conn, self)
            yield tx
        self._created(tx.jobs)

    async def submit(self, request: JobRequest, *, tenant: str, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job. Returns (job, created); with an idempotency key seen before, the existing job
        (409 if it was for a different request). The key is a tenant's: see `tenant_idempotency_key`."""
        if idempotency_key is not None:
            key = tenant_idempotency_key(idempotency_key)
            return await self._submit_once(request, tenant=tenant, idempotency_key=key)
        job = self.build(request, tenant=tenant)
        await check_webhook(self.outbound, request, tenant=tenant)
        kind = self.registry.get(job.kind)
        # Its own transaction: a missing file, or a refusal of the kind's `on_queue`, fails this job only.
        if kind.on_queue is not None or kind.file_ids(job.input):
            async with db.write(self.engine) as conn:
                [job] = await _add_holding_files(conn, self.registry, [job])
            self._created([job])
            return job, True
        pending = _PendingJob(job, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a client that hangs up does not take its job out of a batch being written.
        return await asyncio.shield(pending.future), True

    def close(self) -> None:
        self.outbound.close()
        if self.sqlite_writer is not None:
            self.sqlite_writer.close()

    def _created(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        if self.wakeup is not None:
            self.wakeup.notify({job.kind for job in jobs})
        if self.metrics is not None:
            for job in jobs:
                self.metrics.jobs_submitted.labels(job.kind).inc()

    async def _submit_once(self, request: JobRequest, *, tenant: str, idempotency_key: str) -> tuple[Job, bool]:
        request = validated_request(self.registry, request)  # the hash covers the defaults filled in
        await check_webhook(self.outbound, request, tenant=tenant)
        job = new_job(request, tenant=tenant, now=utcnow(), default_max_attempts=self.default_max_attempts)
        job = replace(job, idempotency_key=idempotency_key, request_hash=request.fingerprint())
        try:
            async with db.write(self.engine) as conn:
                store = JobStore(conn)
                if existing := await store.get_by_idempotency_key(tenant, idempotency_key):
                    return _same_request(existing, job.request_hash), False
                [job] = await _add_holding_files(conn, self.registry, [job])
        except sa.exc.IntegrityError:
            # A concurrent request with the same key won the insert; answer as if we had come second.
            async with db.read(self.engine) as conn:
                existing = await JobStore(conn).get_by_idempotency_key(tenant, idempotency_key)
            if existing is None:
                raise
            return _same_request(existing, job.request_hash), False
        self._created([job])
        return job, True

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
            self._created(placed)
            for item, job in zip(batch, placed, strict=True):
                if not item.future.done():
                    item.future.set_result(job)

    async def _insert(self, batch: list[Job]) -> list[Job]:
        if self.sqlite_writer is not None:  # one thread hop for the whole transaction
            return await self.sqlite_writer.run(lambda conn: add_jobs_sync(conn, batch))
        async with db.write(self.engine) as conn:
            return await JobStore(conn).add(batch)


async def _add_holding_files(conn: AsyncConnection, registry: KindRegistry, batch: list[Job]) -> list[Job]:
    """Insert jobs holding the tenant files they name (NotFound if one is gone), each listed in `job_files`
    so that a delete of the file finds the job; their kinds' `on_queue` first, in the same transaction."""
    kinds = [registry.get(job.kind) for job in batch]
    for kind, job in zip(kinds, batch, strict=True):
        if kind.on_queue is not None:
            await kind.on_queue(conn, job)
    named = [kind.file_ids(job.input) for kind, job in zip(kinds, batch, strict=True)]
    for job, file_ids in zip(batch, named, strict=True):
        await hold_files(conn, job.tenant, file_ids)
    placed = await JobStore(conn).add(batch)
    rows = [
        {"job_id": job.id, "file_id": file_id, "tenant": job.tenant}
        for job, file_ids in zip(placed, named, strict=True)
        for file_id in file_ids
    ]
    if rows:
        await conn.execute(job_files.insert(), rows)
    return placed


def _same_request(existing: Job, fingerprint: str | None) -> Job:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key was already used for job {existing.id} with a different request body"
        )
    return existing
