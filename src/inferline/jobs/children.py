"""Child jobs: a kind that submits jobs and waits for them (the media pipeline; bulk batches alike).

    children = ChildJobs(ctx, submitter)
    done = await children.run([Child(f"canvas:{i}", JobRequest("canvas", {...}), weight=5) for i ...],
                              progress_from=5, progress_to=60)
    clip_id = done["canvas:0"].result["file_id"]

A child's idempotency key is its parent's id and its role (`inferline:child:<parent id>:<role>`), so an
attempt after a crash finds the children of the earlier ones instead of submitting them again; a child
found failed is queued again (a retried parent retries its failed children), one found succeeded is kept.
Waiting reads the children's rows every `poll_s` and reports their weighted progress as the parent's; once
few are left, at once when a worker of this process writes one's end (`wakeup.JobEnds`), and more often
while one runs in another process.
A failed child fails the parent with the child's reason; its siblings are left to finish, so a retry of
the parent reuses them. Canceling the parent cancels its unfinished children (`cancel_job` does it in the
same transaction; a parent stopped by its deadline does it here); a parent stopped by a shutdown or a lost
lease leaves them running, for its next attempt to find.

A kind that waits on its children is registered with `waits_on_jobs=True`, so it runs in the orchestration
lane (docs/jobs.md) and never holds a slot its children need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NonRetryable
from inferline.jobs import heartbeats, webhooks
from inferline.jobs.context import LEASE_LOST, SHUTDOWN, JobContext
from inferline.jobs.model import Job, JobStatus, WebhookEvent
from inferline.jobs.store import JobStore
from inferline.jobs.submission import SERVER_KEY_PREFIX, JobRequest, Submitter

MAX_ROLE_CHARS = 100
# While this many children or fewer have not succeeded (the next phase waits for the last one's end), the
# parent is woken by their ends written in this process, and reads every FAST_POLL_S those running elsewhere.
FEW_CHILDREN, FAST_POLL_S = 4, 0.05


def key_prefix(parent_id: str) -> str:
    return f"{SERVER_KEY_PREFIX}child:{parent_id}:"


def is_child(job: Job) -> bool:
    """Whether `job` was submitted by a parent job (server code built its input), not by a caller: no
    caller's key may start with SERVER_KEY_PREFIX."""
    return (job.idempotency_key or "").startswith(f"{SERVER_KEY_PREFIX}child:")


def child_key(parent_id: str, role: str) -> str:
    if not 0 < len(role) <= MAX_ROLE_CHARS:
        raise ValueError(f"a child's role is 1 to {MAX_ROLE_CHARS} characters: {role!r}")
    return key_prefix(parent_id) + role


@dataclass(frozen=True)
class Child:
    """A job to submit: `role` names it among its parent's children, across the parent's attempts."""

    role: str
    request: JobRequest
    weight: float = 1.0  # its share of the parent's progress while `wait` runs


async def cancel_children(conn: AsyncConnection, *, tenant: str, parent_id: str) -> list[Job]:
    """Cancel the unfinished children of a job, in the caller's transaction (rows locked in id order,
    after the parent's: children's ids are newer). Queued ones end now, running ones are asked to stop."""
    now = utcnow()
    store = JobStore(conn)
    canceled = []
    for job in await store.by_key_prefix(tenant, key_prefix(parent_id), unfinished=True):
        updated = job.cancel(now)
        if await store.save(updated, expect_status=job.status):
            canceled.append(updated)
            if updated.status is JobStatus.CANCELED:
                await webhooks.enqueue(conn, updated, WebhookEvent.COMPLETED, now)
    return canceled


def weighted_percent(jobs: Sequence[Job], weights: Mapping[str, float]) -> float:
    """0-100: each job's progress (100 once succeeded) weighted by `weights[job.id]`."""
    total = sum(weights[job.id] for job in jobs)
    if total <= 0:
        return 100.0
    done = sum(weights[job.id] * (100.0 if job.status is JobStatus.SUCCEEDED else job.progress) for job in jobs)
    return min(100.0, done / total)


class ChildJobs:
    """The children of the job `ctx` runs."""

    def __init__(self, ctx: JobContext, submitter: Submitter, *, poll_s: float = 0.25) -> None:
        self._ctx = ctx
        self._submitter = submitter
        self._poll_s = poll_s

    async def run(
        self, children: Sequence[Child], *, progress_from: float = 0.0, progress_to: float = 100.0
    ) -> dict[str, Job]:
        """Submit (or find) the children, wait until all succeeded; their jobs by role."""
        jobs = await self.submit(children)
        weights = {jobs[child.role].id: child.weight for child in children}
        return await self.wait(jobs, weights, progress_from=progress_from, progress_to=progress_to)

    async def submit(self, children: Sequence[Child]) -> dict[str, Job]:
        """The children's jobs by role, in one transaction: those an earlier attempt submitted are found by
        key (a failed or canceled one is queued again: this attempt of the parent needs it), the others are
        submitted now."""
        parent, tenant = self._ctx.id, self._ctx.tenant
        requeued: list[Job] = []
        jobs: dict[str, Job] = {}
        async with self._submitter.transaction() as tx:
            store = JobStore(tx.conn)
            found = {job.idempotency_key: job for job in await store.by_key_prefix(tenant, key_prefix(parent))}
            for child in children:
                key = child_key(parent, child.role)
                job = found.get(key)
                if job is None:
                    job = await tx.add(child.request, tenant=tenant, idempotency_key=key)
                elif job.status in (JobStatus.FAILED, JobStatus.CANCELED):
                    if await store.get(job.id, tenant=tenant, lock=True) is None:
                        # Deleted by the retention of ended jobs since it was read: a new one.
                        job = await tx.add(child.request, tenant=tenant, idempotency_key=key)
                    else:
                        again = job.again(utcnow())
                        await self._submitter.registry.queued(tx.conn, again)
                        job = await store.requeue(again) or again  # locked: its row is there
                        requeued.append(job)
                jobs[child.role] = job
        if requeued and self._submitter.wakeup is not None:
            self._submitter.wakeup.notify({job.kind for job in requeued})
        return jobs

    async def wait(
        self,
        jobs: Mapping[str, Job],
        weights: Mapping[str, float],
        *,
        progress_from: float = 0.0,
        progress_to: float = 100.0,
    ) -> dict[str, Job]:
        """Until every child succeeded (their jobs by role, with results), reporting their weighted progress
        (`weights` by job id) between `progress_from` and `progress_to`. A failed or canceled child raises
        `NonRetryable` with its reason; a canceled parent cancels the unfinished children."""
        roles = {job.id: role for role, job in jobs.items()}
        latest = {job.id: job for job in jobs.values()}
        ends = self._submitter.ends
        try:
            while True:
                # A child that succeeded is not read again: only this parent could queue it again.
                waiting = [job_id for job_id, job in latest.items() if job.status is not JobStatus.SUCCEEDED]
                # Once few are left, they are watched before the read: an end that a worker of this process
                # writes after it wakes the parent at once. Those running in another process are read every
                # FAST_POLL_S; the rest (and a large phase's, whose ends do not gate anything) every poll.
                with ends.watch(waiting if len(waiting) <= FEW_CHILDREN else ()) as ended:
                    current = await self._read(waiting) if waiting else []
                    if current is not None:
                        self._raise_if_failed(current, roles)
                        latest |= {job.id: job for job in current}
                        percent = weighted_percent(list(latest.values()), weights)
                        span = progress_to - progress_from
                        done = sum(job.status is JobStatus.SUCCEEDED for job in latest.values())
                        await self._ctx.progress(progress_from + span * percent / 100, f"{done} of {len(latest)} done")
                        if done == len(latest):
                            return {roles[job_id]: job for job_id, job in latest.items()}
                    await ends.until(ended, timeout_s=self._next_read_s(list(latest.values()), ends.owners))
        except asyncio.CancelledError:
            if self._ctx.cancel_reason not in (None, SHUTDOWN, LEASE_LOST):  # a cancel or the deadline
                await asyncio.shield(self.cancel())
            raise

    def _next_read_s(self, children: Sequence[Job], local_owners: Collection[str]) -> float:
        """How long to wait for a wake before reading the children again."""
        left = [job for job in children if job.status is not JobStatus.SUCCEEDED]
        elsewhere = any(job.status is JobStatus.RUNNING and job.lease_owner not in local_owners for job in left)
        return min(FAST_POLL_S, self._poll_s) if len(left) <= FEW_CHILDREN and elsewhere else self._poll_s

    async def cancel(self) -> list[Job]:
        """Cancel the unfinished children (the parent itself stops by its own cancel); those running in
        this process stop now, not at their next heartbeat."""
        engine = self._submitter.engine
        async with db.write(engine) as conn:
            canceled = await cancel_children(conn, tenant=self._ctx.tenant, parent_id=self._ctx.id)
        heartbeats.stop_here(engine, (job.id for job in canceled if job.status is JobStatus.RUNNING))
        return canceled

    async def _read(self, child_ids: list[str]) -> list[Job] | None:
        """The children's rows; None while the parent's own cancel is pending (its children are being
        canceled with it: the worker stops this attempt within a heartbeat)."""
        async with db.read(self._submitter.engine) as conn:
            rows = await JobStore(conn).get_many([self._ctx.id, *child_ids], tenant=self._ctx.tenant)
        by_id = {job.id: job for job in rows}
        parent = by_id.pop(self._ctx.id, None)
        if parent is not None and parent.cancel_requested:
            return None
        missing = [job_id for job_id in child_ids if job_id not in by_id]
        if missing:
            raise NonRetryable(f"child jobs {', '.join(missing)} are gone")
        return [by_id[job_id] for job_id in child_ids]

    @staticmethod
    def _raise_if_failed(jobs: Sequence[Job], roles: Mapping[str, str]) -> None:
        for job in jobs:
            if job.status is JobStatus.FAILED:
                reason = (job.error or {}).get("message", "failed")
                raise NonRetryable(f"{roles[job.id]} ({job.kind} job {job.id}) failed: {reason}")
            if job.status is JobStatus.CANCELED:
                raise NonRetryable(f"{roles[job.id]} ({job.kind} job {job.id}) was canceled")
