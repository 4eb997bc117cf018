"""Use cases of the job core after submission (`submission.py` creates jobs). Each opens and commits its
own transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NotFound
from inferline.jobs import webhooks
from inferline.jobs.children import cancel_children
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, WebhookEvent
from inferline.jobs.store import JobStore
from inferline.jobs.wakeup import Wakeup


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
    """Cancel a queued job at once; ask a running one to stop (its worker sees it within a heartbeat). The
    jobs it submitted through `ChildJobs` are canceled with it."""
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
        await cancel_children(conn, tenant=tenant, parent_id=job_id)
    return updated


async def retry_job(
    engine: AsyncEngine,
    *,
    tenant: str,
    job_id: str,
    wakeup: Wakeup | None = None,
    registry: KindRegistry | None = None,
) -> Job:
    """A failed job queued again; its kind's `on_queue` runs first (a pipeline claims its project again:
    409 while another run of it has not ended)."""
    async with db.write(engine) as conn:
        store = JobStore(conn)
        job = await store.get(job_id, tenant=tenant, lock=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        again = job.retry(utcnow())
        if registry is not None:
            await registry.queued(conn, again)
        requeued = await store.requeue(again)
    if wakeup is not None:
        wakeup.notify((requeued.kind,))
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
        store = JobStore(conn)  # the claim commits without waiting for the disk (`JobStore.claim`)
        claimed = await store.claim(
            owner=owner, kinds=kinds, limit=limit, now=now, lease_s=lease_s, kind_limits=kind_limits
        )
        for job in claimed:
            await webhooks.enqueue(conn, job, WebhookEvent.START, now)
    return claimed


async def queue_depth(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with db.read(engine, slow=True) as conn:  # counts every queued job
        return await JobStore(conn).queue_depth()
