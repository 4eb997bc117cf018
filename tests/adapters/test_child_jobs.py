"""Child jobs: submitted once per role across the parent's attempts, waited for, canceled with the parent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import db
from inferline.clock import utcnow
from inferline.errors import NonRetryable
from inferline.jobs.children import Child, ChildJobs, weighted_percent
from inferline.jobs.context import JobContext
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, RetryPolicy
from inferline.jobs.runtime import Worker, WorkerConfig
from inferline.jobs.service import cancel_job, get_job
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter
from inferline.jobs.testing import MemoryContext
from inferline.jobs.wakeup import LocalWakeup
from inferline.metrics import Metrics
from inferline.schema import jobs

FAST = WorkerConfig(concurrency=4, lease_s=5.0, heartbeat_s=0.1, poll_s=0.1, retry=RetryPolicy(0.02, 0.1))


def echo(steps: int = 1, step_s: float = 0.0, **more: Any) -> JobRequest:
    return JobRequest("echo", {"message": "child", "steps": steps, "step_s": step_s} | more)


@pytest.fixture
def registry() -> KindRegistry:
    registry = KindRegistry()
    register_echo(registry)

    @registry.kind("parent", waits_on_jobs=True)
    async def parent(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    return registry


@pytest.fixture
def submitter(engine: AsyncEngine, registry: KindRegistry) -> Submitter:
    return Submitter(engine, registry, default_max_attempts=3, wakeup=LocalWakeup())


@pytest.fixture
async def parent(submitter: Submitter) -> Job:
    job, _ = await submitter.submit(JobRequest("parent", {}), tenant="t")
    return replace(job, status=JobStatus.RUNNING, attempts=1)


@pytest.fixture
async def worker(engine: AsyncEngine, registry: KindRegistry, submitter: Submitter) -> AsyncIterator[Worker]:
    """A worker of the children's kind in this process: it tells the submitter's `ends` what it writes, as
    `Background` has it do."""
    assert submitter.wakeup is not None
    worker = Worker(
        engine, registry, FAST, wakeup=submitter.wakeup, metrics=Metrics(), kinds=["echo"], ends=submitter.ends
    )
    await worker.start()
    yield worker
    await worker.stop(grace_s=1)


async def tenant_jobs(engine: AsyncEngine) -> list[Job]:
    async with db.read(engine) as conn:
        jobs, _ = await JobStore(conn).page(tenant="t", status=None, kind=None, limit=100, cursor=None)
    return jobs


async def status_of(engine: AsyncEngine, job_id: str) -> JobStatus:
    return (await get_job(engine, tenant="t", job_id=job_id)).status


def test_weighted_progress_counts_a_succeeded_child_whole_and_a_running_one_by_its_progress(parent: Job) -> None:
    heavy = replace(parent, id="a", status=JobStatus.SUCCEEDED, progress=40.0)
    light = replace(parent, id="b", status=JobStatus.RUNNING, progress=50.0)
    assert weighted_percent([heavy, light], {"a": 3.0, "b": 1.0}) == pytest.approx(87.5)


async def test_children_run_and_come_back_by_role_with_the_parents_progress_rising_to_its_span(
    engine: AsyncEngine, submitter: Submitter, parent: Job, worker: Worker
) -> None:
    ctx = MemoryContext(parent)
    children = [Child("first", echo(steps=3, step_s=0.05), weight=3), Child("second", echo())]
    done = await ChildJobs(ctx, submitter, poll_s=0.02).run(children, progress_from=10, progress_to=60)
    assert {role: job.result for role, job in done.items()} == {
        "first": {"message": "child", "steps_run": [0, 1, 2]},
        "second": {"message": "child", "steps_run": [0]},
    }
    assert ctx.percents == sorted(ctx.percents) and ctx.percents[-1] == 60.0 and ctx.percents[0] >= 10.0


async def test_a_child_that_succeeded_is_not_read_again_while_its_siblings_run(
    engine: AsyncEngine, submitter: Submitter, parent: Job, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phase of many children is read whole at first, then only its children still running: a parent
    waiting on hundreds of clips does not read the finished ones every poll."""
    reads: list[dict[str, JobStatus]] = []  # each read: the status of each job it asked for
    get_many = JobStore.get_many

    async def counted(self: JobStore, ids: list[str], **kwargs: Any) -> list[Job]:
        found = await get_many(self, ids, **kwargs)
        reads.append({job.id: job.status for job in found})
        return found

    monkeypatch.setattr(JobStore, "get_many", counted)
    children = [Child("quick", echo()), Child("slow", echo(steps=8, step_s=0.05))]
    done = await ChildJobs(MemoryContext(parent), submitter, poll_s=0.02).run(children)
    quick, slow = done["quick"].id, done["slow"].id
    seen_done = next(i for i, read in enumerate(reads) if read.get(quick) is JobStatus.SUCCEEDED)
    later = reads[seen_done + 1 :]
    assert any(slow in read for read in later), reads  # the sibling was still read after that
    assert not any(quick in read for read in later), reads


async def test_a_child_ending_in_this_process_wakes_its_parent_without_waiting_for_the_next_poll(
    engine: AsyncEngine, submitter: Submitter, parent: Job, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next phase of a pipeline waits for the last child's end: where the child ran in this process,
    the parent reads it as its end is written, not up to a poll later (a poll of 60 s here)."""
    reads: list[float] = []
    get_many = JobStore.get_many

    async def timed(self: JobStore, ids: list[str], **kwargs: Any) -> list[Job]:
        reads.append(asyncio.get_running_loop().time())
        return await get_many(self, ids, **kwargs)

    monkeypatch.setattr(JobStore, "get_many", timed)
    children = [Child("first", echo(steps=2, step_s=0.05)), Child("second", echo(steps=4, step_s=0.05))]
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(30):  # half the poll: only the wake-ups can end it
        done = await ChildJobs(MemoryContext(parent), submitter, poll_s=60).run(children)
    assert {job.status for job in done.values()} == {JobStatus.SUCCEEDED}
    assert len(reads) <= 1 + len(children), reads  # the first read, then one per end at most
    assert asyncio.get_running_loop().time() - started < 30


async def test_a_child_running_in_another_process_is_read_often_once_few_are_left(
    engine: AsyncEngine, submitter: Submitter, registry: KindRegistry, parent: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of another process (here: one not reporting to these `ends`) wakes nothing: while it runs
    one of the last children, the parent reads them every FAST_POLL_S, not every poll (60 s here). (A child
    still queued is read at the poll: who claims it is not known yet.)"""
    reads: list[int] = []
    get_many = JobStore.get_many

    async def counted(self: JobStore, ids: list[str], **kwargs: Any) -> list[Job]:
        reads.append(len(ids))
        return await get_many(self, ids, **kwargs)

    monkeypatch.setattr(JobStore, "get_many", counted)
    assert submitter.wakeup is not None
    elsewhere = Worker(engine, registry, FAST, wakeup=submitter.wakeup, metrics=Metrics(), kinds=["echo"])
    await elsewhere.start()
    try:
        children = ChildJobs(MemoryContext(parent), submitter, poll_s=60)
        submitted = await children.submit([Child("a", echo(steps=10, step_s=0.05))])
        child_id = submitted["a"].id
        await eventually(lambda: status_of(engine, child_id), lambda status: status is JobStatus.RUNNING)
        async with asyncio.timeout(30):  # half the poll
            done = await children.wait(submitted, {child_id: 1.0})
    finally:
        await elsewhere.stop(grace_s=1)
    assert done["a"].status is JobStatus.SUCCEEDED
    assert len(reads) > 2  # read while it ran, by the short poll


async def test_a_resumed_parent_finds_its_children_instead_of_submitting_them_again(
    engine: AsyncEngine, submitter: Submitter, parent: Job
) -> None:
    children = [Child("canvas:0", echo()), Child("canvas:1", echo())]
    first = await ChildJobs(MemoryContext(parent), submitter).submit(children)
    again = await ChildJobs(MemoryContext(parent, attempt=2), submitter).submit([*children, Child("render", echo())])
    assert {role: job.id for role, job in first.items()} == {role: again[role].id for role in first}
    assert len(await tenant_jobs(engine)) == 1 + 3  # the parent and three children, none twice


async def test_a_failed_child_fails_the_parent_with_its_reason_and_a_retried_parent_queues_it_again(
    engine: AsyncEngine, submitter: Submitter, parent: Job, worker: Worker
) -> None:
    children = [Child("render", JobRequest("echo", {"message": "m", "fail_first": 9}, max_attempts=1))]
    with pytest.raises(NonRetryable, match=r"render \(echo job .*\) failed: echo: attempt 1 fails as asked"):
        await ChildJobs(MemoryContext(parent), submitter, poll_s=0.02).run(children)
    await worker.stop(grace_s=1)
    again = await ChildJobs(MemoryContext(parent, attempt=2), submitter).submit(children)
    assert again["render"].status is JobStatus.QUEUED and again["render"].attempts == 0


async def test_a_failed_child_deleted_after_the_parent_read_it_is_submitted_anew(
    engine: AsyncEngine, submitter: Submitter, parent: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention of ended jobs may delete a failed child between a retried parent's read of its
    children and its requeue of that child: the parent then submits the child again, not a job that is gone."""
    children = [Child("render", echo())]
    [first] = (await ChildJobs(MemoryContext(parent), submitter).submit(children)).values()
    async with db.write(engine) as conn:
        await conn.execute(jobs.update().where(jobs.c.id == first.id).values(status="failed", finished_at=utcnow()))
    stale = await tenant_jobs(engine)  # as the parent's read saw them
    async with db.write(engine) as conn:
        await conn.execute(jobs.delete().where(jobs.c.id == first.id))  # the purge, right after that read

    async def as_read(self: JobStore, tenant: str, prefix: str, **kwargs: Any) -> list[Job]:
        return [job for job in stale if (job.idempotency_key or "").startswith(prefix)]

    monkeypatch.setattr(JobStore, "by_key_prefix", as_read)
    again = await ChildJobs(MemoryContext(parent, attempt=2), submitter).submit(children)
    assert again["render"].id != first.id and again["render"].status is JobStatus.QUEUED
    monkeypatch.undo()
    assert await status_of(engine, again["render"].id) is JobStatus.QUEUED


async def test_canceling_the_parent_cancels_its_unfinished_children_and_keeps_the_finished_ones(
    engine: AsyncEngine, submitter: Submitter, parent: Job, worker: Worker
) -> None:
    children = ChildJobs(MemoryContext(parent), submitter)
    quick = await children.submit([Child("quick", echo())])
    await eventually(lambda: status_of(engine, quick["quick"].id), lambda status: status is JobStatus.SUCCEEDED)
    slow = await children.submit([Child("slow", echo(steps=200, step_s=0.05))])
    await eventually(lambda: status_of(engine, slow["slow"].id), lambda status: status is JobStatus.RUNNING)
    await cancel_job(engine, tenant="t", job_id=parent.id)
    await eventually(lambda: status_of(engine, slow["slow"].id), lambda status: status is JobStatus.CANCELED)
    assert await status_of(engine, quick["quick"].id) is JobStatus.SUCCEEDED


@pytest.mark.parametrize(("reason", "children_end"), [("deadline", JobStatus.CANCELED), ("shutdown", JobStatus.QUEUED)])
async def test_a_parent_stopped_by_its_deadline_cancels_its_children_and_one_shut_down_leaves_them(
    engine: AsyncEngine, submitter: Submitter, parent: Job, reason: str, children_end: JobStatus
) -> None:
    ctx = MemoryContext(parent)
    children = ChildJobs(ctx, submitter, poll_s=0.02)
    jobs = await children.submit([Child("a", echo()), Child("b", echo())])  # no worker: they stay queued
    waiting = asyncio.create_task(children.wait(jobs, {job.id: 1.0 for job in jobs.values()}))
    await asyncio.sleep(0.1)
    ctx.cancel(reason)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [await status_of(engine, job.id) for job in jobs.values()] == [children_end, children_end]


async def test_a_child_canceled_on_its_own_fails_the_parent_but_not_while_the_parent_is_being_canceled(
    engine: AsyncEngine, submitter: Submitter, parent: Job
) -> None:
    children = ChildJobs(MemoryContext(parent), submitter, poll_s=0.02)
    jobs = await children.submit([Child("a", echo()), Child("b", echo())])
    weights = {job.id: 1.0 for job in jobs.values()}
    await cancel_job(engine, tenant="t", job_id=jobs["a"].id)
    with pytest.raises(NonRetryable, match=r"a \(echo job .*\) was canceled"):
        await children.wait(jobs, weights)
    # The parent's next attempt (after that failure, retried) queues the canceled child again.
    again = await ChildJobs(MemoryContext(parent, attempt=2), submitter).submit(
        [Child("a", echo()), Child("b", echo())]
    )
    assert again["a"].id == jobs["a"].id and again["a"].status is JobStatus.QUEUED
    assert not again["a"].cancel_requested and again["a"].canceled_at is None
    assert await status_of(engine, jobs["a"].id) is JobStatus.QUEUED
    # The parent's own cancel cancels its children too; the parent waits for its worker to stop it.
    await cancel_job(engine, tenant="t", job_id=parent.id)
    waiting = asyncio.create_task(children.wait(jobs, weights))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_parent_past_its_deadline_stops_its_child_running_in_this_process_before_the_next_beat(
    engine: AsyncEngine, registry: KindRegistry, submitter: Submitter, parent: Job
) -> None:
    assert submitter.wakeup is not None
    slow_beats = replace(FAST, heartbeat_s=30.0, lease_s=60.0)  # a beat would come long after the check below
    worker = Worker(engine, registry, slow_beats, wakeup=submitter.wakeup, metrics=Metrics(), kinds=["echo"])
    await worker.start()
    try:
        ctx = MemoryContext(parent)
        children = ChildJobs(ctx, submitter, poll_s=0.02)
        jobs = await children.submit([Child("slow", echo(steps=600, step_s=0.05))])  # 30 s unless stopped
        child = jobs["slow"].id
        await eventually(lambda: status_of(engine, child), lambda status: status is JobStatus.RUNNING)
        waiting = asyncio.create_task(children.wait(jobs, {child: 1.0}))
        await asyncio.sleep(0.05)
        ctx.cancel("deadline")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await eventually(lambda: status_of(engine, child), lambda status: status is JobStatus.CANCELED, timeout_s=10)
    finally:
        await worker.stop(grace_s=1)
