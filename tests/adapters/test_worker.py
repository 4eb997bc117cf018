"""The worker runtime running real jobs, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import threads
from inferline.errors import NonRetryable
from inferline.jobs import attempts
from inferline.jobs.context import JobContext
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, RetryPolicy
from inferline.jobs.runtime import Worker, WorkerConfig
from inferline.jobs.service import cancel_job, claim_jobs, get_job
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter
from inferline.jobs.wakeup import LocalWakeup
from inferline.metrics import Metrics

FAST = WorkerConfig(
    concurrency=4,
    lease_s=5.0,
    heartbeat_s=0.1,
    poll_s=0.1,
    retry=RetryPolicy(base_s=0.02, cap_s=0.1),
    reap_every_s=0.1,
)


@pytest.fixture
def registry(tmp_path: Path) -> KindRegistry:
    registry = KindRegistry()
    register_echo(registry)

    @registry.kind("refuse")
    async def refuse(ctx: JobContext, data: dict[str, Any]) -> None:
        raise NonRetryable("this input can never work")

    @registry.kind("sleeper")
    async def sleeper(ctx: JobContext, data: dict[str, Any]) -> None:
        pid_file = tmp_path / f"{ctx.id}.pid"
        await ctx.run_subprocess(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])

    return registry


@pytest.fixture
async def worker(engine: AsyncEngine, registry: KindRegistry) -> AsyncIterator[Worker]:
    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    yield worker
    await worker.stop(grace_s=1)


async def submit(engine: AsyncEngine, registry: KindRegistry, kind: str = "echo", **fields: Any) -> Job:
    submitter = Submitter(engine, registry, default_max_attempts=3)
    job, _ = await submitter.submit(JobRequest(kind=kind, **fields), tenant="t")
    return job


async def wait_for(engine: AsyncEngine, job_id: str, done: Callable[[Job], bool], timeout_s: float = 10) -> Job:
    return await eventually(
        lambda: get_job(engine, tenant="t", job_id=job_id),
        done,
        timeout_s=timeout_s,
        interval_s=0.02,
        describe=lambda job: f"job stayed {job.status} ({job.stage}, {job.detail})",
    )


def finished(job: Job) -> bool:
    return job.status.is_terminal


async def test_an_echo_job_runs_its_steps_and_succeeds(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, input={"message": "hello", "steps": 3})
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"message": "hello", "steps_run": [0, 1, 2]}
    assert done.stage == "step 3/3" and done.progress == 100.0
    assert done.attempts == 1 and done.lease_owner is None
    assert done.started_at is not None and done.finished_at is not None and done.started_at <= done.finished_at


async def test_retries_resume_from_the_checkpoint_and_succeed(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 3, "fail_first": 2})
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempts == 3
    # Attempts 1 and 2 each ran one step, checkpointed and failed; attempt 3 ran only the last step.
    assert done.result == {"message": "m", "steps_run": [2]}
    assert done.error is not None
    assert [entry["attempt"] for entry in done.error["attempts"]] == [1, 2]


async def test_retries_run_out_and_the_job_fails_with_its_history(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 1, "fail_first": 9}, max_attempts=2)
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.FAILED
    assert done.attempts == 2
    assert done.error is not None and done.error["type"] == "JobError"
    assert "fails as asked" in done.error["message"]
    assert len(done.error["attempts"]) == 2


async def test_a_non_retryable_error_fails_on_the_first_attempt(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, kind="refuse", input={}, max_attempts=5)
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error["type"] == "NonRetryable"


async def test_a_running_job_is_canceled_within_two_seconds(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 200, "step_s": 0.05})
    await wait_for(engine, job.id, lambda j: j.status is JobStatus.RUNNING and j.progress > 0)
    asked = time.monotonic()
    await cancel_job(engine, tenant="t", job_id=job.id)
    done = await wait_for(engine, job.id, finished)
    assert time.monotonic() - asked < 2.0
    assert done.status is JobStatus.CANCELED and done.canceled_at is not None
    await asyncio.sleep(0.3)
    assert (await get_job(engine, tenant="t", job_id=job.id)).progress == done.progress  # it really stopped


async def test_canceling_kills_the_jobs_subprocess(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker, tmp_path: Path
) -> None:
    job = await submit(engine, registry, kind="sleeper", input={})
    pid_file = tmp_path / f"{job.id}.pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout_s=4, interval_s=0.02)
    pid = int(pid_file.read_text())
    await cancel_job(engine, tenant="t", job_id=job.id)
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.CANCELED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_running_job_past_its_deadline_is_canceled(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 100, "step_s": 0.05}, deadline_s=0.4)
    done = await wait_for(engine, job.id, finished)
    assert done.status is JobStatus.CANCELED and done.detail == "deadline"
    assert done.finished_at is not None and done.deadline_at is not None
    assert (done.finished_at - done.deadline_at).total_seconds() < 1.0


async def test_a_queued_job_past_its_deadline_is_canceled_without_running(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    job = await submit(engine, registry, input={"message": "m"}, deadline_s=0.05)
    await asyncio.sleep(0.1)
    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics(), kinds=["refuse"])
    await worker.start()
    try:
        done = await wait_for(engine, job.id, finished)
    finally:
        await worker.stop()
    assert done.status is JobStatus.CANCELED and done.detail == "deadline" and done.attempts == 0


async def test_a_job_left_by_a_dead_worker_resumes_from_its_checkpoint(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 5})
    [claimed] = await claim_jobs(engine, owner="dead", kinds=["echo"], limit=1, lease_s=0.2, kind_limits={})
    async with engine.begin() as conn:
        await JobStore(conn).update_running(claimed.id, "dead", {"checkpoint": {"next_step": 3}})
    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        done = await wait_for(engine, job.id, finished)
    finally:
        await worker.stop()
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"message": "m", "steps_run": [3, 4]}
    assert done.attempts == 2


async def test_stopping_a_worker_gives_its_jobs_back_without_spending_an_attempt(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    job = await submit(engine, registry, input={"message": "m", "steps": 100, "step_s": 0.05})
    await wait_for(engine, job.id, lambda j: (j.checkpoint or {}).get("next_step", 0) >= 2)
    await worker.stop(grace_s=0.1)
    released = await get_job(engine, tenant="t", job_id=job.id)
    assert released.status is JobStatus.QUEUED
    assert released.attempts == 0 and released.lease_owner is None
    assert released.checkpoint is not None and released.checkpoint["next_step"] >= 2


async def test_many_jobs_run_once_each(engine: AsyncEngine, registry: KindRegistry, worker: Worker) -> None:
    jobs = [await submit(engine, registry, input={"message": str(i), "steps": 0}) for i in range(100)]
    for job in jobs:
        done = await wait_for(engine, job.id, finished)
        assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
        assert done.result == {"message": job.input["message"], "steps_run": []}


async def test_metrics_count_finished_jobs(engine: AsyncEngine, registry: KindRegistry, worker: Worker) -> None:
    job = await submit(engine, registry, input={"message": "m", "steps": 0})
    await wait_for(engine, job.id, finished)
    await asyncio.sleep(0.05)
    text = worker.metrics.render().decode()
    assert 'inferline_jobs_finished_total{kind="echo",status="succeeded"} 1.0' in text
    assert "inferline_job_queue_wait_seconds_count" in text


async def test_an_idle_worker_takes_no_write_lock_on_heartbeats(engine: AsyncEngine, registry: KindRegistry) -> None:
    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics())
    began: list[str] = []
    sqlalchemy_event.listen(engine.sync_engine, "begin", lambda conn: began.append("begin"))
    await worker.heartbeat()
    assert began == []


async def test_quick_stages_share_a_write_and_the_last_one_lands_with_the_outcome(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    seen: list[str] = []

    @registry.kind("stages")
    async def stages(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        for name in ("extract", "chunk", "embed"):
            await ctx.stage(name)
        await asyncio.sleep(0.6)  # long enough for the deferred write; the heartbeat is far off
        await ctx.stage("index")  # the interval is up: written at once
        await ctx.stage("done", "3 chunks")  # right after it: left for the outcome's write
        return {}

    # Heartbeats (which also write what is pending) every 30 s: only the deferred write can show "embed".
    config = WorkerConfig(concurrency=1, lease_s=60, heartbeat_s=30, poll_s=0.1, progress_interval_s=0.1)
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    written = worker.write_progress

    async def counting(items: list[tuple[JobContext, dict[str, Any], bool]]) -> set[str]:
        seen.extend(values.get("stage", "") for _, values, _ in items)
        return await written(items)

    worker.write_progress = counting  # type: ignore[method-assign]
    await worker.start()
    try:
        job = await submit(engine, registry, kind="stages", input={})
        running = await wait_for(engine, job.id, lambda j: j.stage == "embed", timeout_s=5)
        assert running.status is JobStatus.RUNNING  # shown while the job still runs, not at its end
        done = await wait_for(engine, job.id, finished)
    finally:
        await worker.stop(grace_s=1)
    assert done.status is JobStatus.SUCCEEDED and done.stage == "done" and done.detail == "3 chunks"
    # The claim counts as a write: "extract" and "chunk" are folded into the deferred write of "embed".
    assert seen == ["embed", "index"]


async def test_progress_of_jobs_running_together_goes_out_in_one_transaction(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    @registry.kind("steps")
    async def steps(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        for step in range(6):
            await ctx.progress(step * 20, f"step {step}")
            await asyncio.sleep(0.04)
        return {}

    config = WorkerConfig(concurrency=3, lease_s=60, heartbeat_s=30, poll_s=0.1, progress_interval_s=0.1)
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    written = worker.write_progress
    writes: list[list[str]] = []

    async def recording(items: list[tuple[JobContext, dict[str, Any], bool]]) -> set[str]:
        writes.append([ctx.id for ctx, _, _ in items])
        return await written(items)

    worker.write_progress = recording  # type: ignore[method-assign]
    jobs = [await submit(engine, registry, kind="steps", input={}) for _ in range(3)]
    await worker.start()
    try:
        done = [await wait_for(engine, job.id, finished) for job in jobs]
    finally:
        await worker.stop(grace_s=1)
    assert all(job.status is JobStatus.SUCCEEDED and job.progress == 100.0 for job in done)
    assert max(len(ids) for ids in writes) == 3  # the three jobs' progress in one write
    assert len(writes) < 9  # 18 updates in ~0.25 s; an interval per job would have written ~3 times each


class Gates:
    """A kind `gated` whose attempts wait until `opened`, and a kind `quick` that only records that it ran;
    both count the attempts running at once."""

    def __init__(self, registry: KindRegistry) -> None:
        self.opened = asyncio.Event()
        self.started: list[str] = []
        self.running = 0
        self.most_running = 0

        @registry.kind("gated")
        async def gated(ctx: JobContext, data: dict[str, Any]) -> None:
            await self._run(ctx, self.opened.wait())

        @registry.kind("quick")
        async def quick(ctx: JobContext, data: dict[str, Any]) -> None:
            await self._run(ctx, asyncio.sleep(float(data.get("sleep_s", 0))))

    async def _run(self, ctx: JobContext, waiting: Any) -> None:
        self.started.append(ctx.id)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await waiting
        finally:
            self.running -= 1


async def status_of(engine: AsyncEngine, job: Job) -> JobStatus:
    return (await get_job(engine, tenant="t", job_id=job.id)).status


async def claimed_ahead_behind_gates(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> tuple[list[Job], list[Job]]:
    """Two gated jobs take a worker's two slots after quick ones taught it to claim ahead (attempts of a few
    µs, claims of a millisecond or more); two quick jobs are then claimed ahead and wait for slots. Returns
    the gated jobs and those two. The worker's means start from their first samples, and on a loaded machine
    an attempt's first can take as long as a claim: quick jobs run until the means say so."""
    for _ in range(20):
        warm = [await submit(engine, registry, kind="quick", input={}) for _ in range(6)]
        for job in warm:
            await wait_for(engine, job.id, finished)
        run_s, claim_s = worker.attempts.mean_run_s, worker._mean_claim_s
        if run_s is not None and claim_s is not None and run_s < claim_s:
            break
    blocking = [await submit(engine, registry, kind="gated", input={}) for _ in range(2)]
    ahead = [await submit(engine, registry, kind="quick", input={}) for _ in range(2)]
    for job in ahead:
        await eventually(lambda job=job: status_of(engine, job), lambda status: status is JobStatus.RUNNING)
    return blocking, ahead


async def test_a_worker_whose_jobs_end_faster_than_a_claim_claims_the_next_batch_ahead_of_its_slots(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    gates = Gates(registry)
    config = WorkerConfig(concurrency=2, claim_batch=2, lease_s=5, heartbeat_s=0.1, poll_s=0.05)
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        # Both slots are taken; the next batch is claimed all the same, and waits for its slots.
        blocking, ahead = await claimed_ahead_behind_gates(engine, registry, worker)
        await eventually(lambda: len(gates.started) == 8)
        await asyncio.sleep(0.3)  # heartbeats keep their leases; none of them starts
        assert not set(gates.started) & {job.id for job in ahead}
        await cancel_job(engine, tenant="t", job_id=ahead[0].id)  # stopped while it waits: never runs
        canceled = await wait_for(engine, ahead[0].id, finished)
        gates.opened.set()
        done = [await wait_for(engine, job.id, finished) for job in [*blocking, ahead[1]]]
    finally:
        await worker.stop(grace_s=1)
    assert canceled.status is JobStatus.CANCELED and ahead[0].id not in gates.started
    assert all(job.status is JobStatus.SUCCEEDED for job in done)
    assert gates.most_running == 2


async def test_jobs_claimed_ahead_behind_long_attempts_go_back_to_the_queue_for_idle_workers(
    engine: AsyncEngine, registry: KindRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts, "SLOT_WAIT_S", 0.5)
    gates = Gates(registry)
    config = WorkerConfig(concurrency=2, claim_batch=2, lease_s=5, heartbeat_s=0.1, poll_s=0.05)
    busy = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    await busy.start()
    idle = Worker(engine, registry, config, kinds=["quick"], wakeup=LocalWakeup(), metrics=Metrics())
    try:
        _, ahead = await claimed_ahead_behind_gates(engine, registry, busy)
        await idle.start()
        # The gates stay shut: only given back can the jobs waiting behind them run, on the idle worker.
        done = [await wait_for(engine, job.id, finished) for job in ahead]
        assert all(job.status is JobStatus.SUCCEEDED and job.attempts == 1 for job in done)
        assert gates.running == 2
    finally:
        gates.opened.set()
        await idle.stop(grace_s=1)
        await busy.stop(grace_s=1)


async def test_a_stopping_worker_gives_back_the_jobs_it_claimed_ahead_without_starting_them(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    gates = Gates(registry)
    config = WorkerConfig(concurrency=2, claim_batch=2, lease_s=5, heartbeat_s=0.1, poll_s=0.05)
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    stopping: asyncio.Task[None] | None = None
    try:
        _, ahead = await claimed_ahead_behind_gates(engine, registry, worker)
        stopping = asyncio.create_task(worker.stop(grace_s=10))
        for job in ahead:  # back in the queue at once, while the running jobs have their grace time
            back = await eventually(
                lambda job=job: status_of(engine, job), lambda status: status is JobStatus.QUEUED, timeout_s=5
            )
            assert back is JobStatus.QUEUED
        gates.opened.set()  # slots free up within the grace time: the given-back jobs do not take them
    finally:
        gates.opened.set()
        await (stopping if stopping is not None else worker.stop(grace_s=1))
    assert not set(gates.started) & {job.id for job in ahead}
    assert [await status_of(engine, job) for job in ahead] == [JobStatus.QUEUED] * 2


async def test_a_worker_whose_jobs_take_longer_than_a_claim_claims_only_its_free_slots(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    gates = Gates(registry)
    config = WorkerConfig(concurrency=2, claim_batch=2, lease_s=5, heartbeat_s=0.1, poll_s=0.05)
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        warm = [await submit(engine, registry, kind="quick", input={"sleep_s": 0.3}) for _ in range(2)]
        for job in warm:
            await wait_for(engine, job.id, finished)
        blocking = [await submit(engine, registry, kind="gated", input={}) for _ in range(2)]
        waiting = [await submit(engine, registry, kind="quick", input={}) for _ in range(2)]
        await eventually(lambda: len(gates.started) == 4)
        await asyncio.sleep(0.3)
        assert [await status_of(engine, job) for job in waiting] == [JobStatus.QUEUED] * 2  # left to others
        gates.opened.set()
        done = [await wait_for(engine, job.id, finished) for job in [*blocking, *waiting]]
    finally:
        await worker.stop(grace_s=1)
    assert all(job.status is JobStatus.SUCCEEDED for job in done)
    assert gates.most_running == 2


@pytest.mark.mariadb_too
async def test_a_heartbeat_tells_each_attempt_until_when_its_renewed_lease_runs(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """What a job claimed ahead checks when it gets its slot (`attempts._lease_lapsed`): the lease as
    written, by the claim and then by each committed renewal."""
    gates = Gates(registry)
    config = WorkerConfig(concurrency=1, lease_s=30, heartbeat_s=60, poll_s=0.05)  # beats only when told
    worker = Worker(engine, registry, config, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        job = await submit(engine, registry, kind="gated", input={})
        await eventually(lambda: len(gates.started) == 1)
        attempt = worker.attempts.snapshot()[job.id]
        claimed = await get_job(engine, tenant="t", job_id=job.id)
        assert attempt.lease_expires_at == claimed.lease_expires_at is not None
        await worker.heartbeat()
        renewed = await get_job(engine, tenant="t", job_id=job.id)
        assert renewed.lease_expires_at is not None and renewed.lease_expires_at > claimed.lease_expires_at
        assert attempt.lease_expires_at == renewed.lease_expires_at
    finally:
        gates.opened.set()
        await worker.stop(grace_s=1)


async def refuse_updates(engine: AsyncEngine, *, postgresql: str, sqlite: str) -> None:
    """A trigger that refuses every update of a job row where the engine's condition holds (the test is
    skipped on other engines)."""
    if engine.dialect.name == "postgresql":
        statements = [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {postgresql} THEN RAISE 'refused'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
    elif engine.dialect.name == "sqlite":
        statements = [
            f"CREATE TRIGGER refuse BEFORE UPDATE ON jobs WHEN {sqlite} BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    else:
        pytest.skip("a trigger of PostgreSQL or SQLite")
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))


@pytest.mark.allow_error_logs  # the refused writes of the batch, logged by the worker's loop
async def test_an_outcome_the_database_refuses_fails_its_job_and_the_others_are_written(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    """A trigger refuses one job's result: the batch of outcomes it is in is refused, twice, then written
    one outcome at a time, and that job's attempt fails naming the refusal. Before, the batch was tried
    again for ever, every outcome that joined it held with it (its jobs `running`)."""
    await refuse_updates(
        engine,
        postgresql="NEW.result->>'message' = 'poison'",
        sqlite="json_extract(NEW.result, '$.message') = 'poison'",
    )
    poison = await submit(engine, registry, input={"message": "poison", "steps": 0}, max_attempts=1)
    others = [await submit(engine, registry, input={"message": "fine", "steps": 0}) for _ in range(6)]
    failed = await wait_for(engine, poison.id, lambda job: job.status is JobStatus.FAILED)
    assert failed.error is not None and failed.error["type"] == "OutcomeNotWritten", failed.error
    assert "refused this attempt's result" in failed.error["message"]
    for job in others:
        done = await wait_for(engine, job.id, lambda job: job.status is JobStatus.SUCCEEDED)
        assert done.result == {"message": "fine", "steps_run": []}


@pytest.mark.allow_error_logs  # the refused writes, and the outcome given up
async def test_an_outcome_refused_even_stripped_is_given_up_and_the_worker_holds_its_job_no_longer(
    engine: AsyncEngine, registry: KindRegistry, worker: Worker
) -> None:
    """A trigger refuses every end of one job: its outcome is refused as it is and stripped (a failure).
    The worker gives it up (its lease then lapses, and the reaper has it as a dead worker's job) instead of
    holding it for ever, each later batch of outcomes refused twice with it."""
    await refuse_updates(
        engine,
        postgresql="OLD.input->>'message' = 'stuck' AND NEW.status <> 'running'",
        sqlite="json_extract(OLD.input, '$.message') = 'stuck' AND NEW.status <> 'running'",
    )
    stuck = await submit(engine, registry, input={"message": "stuck", "steps": 0})
    others = [await submit(engine, registry, input={"message": "fine", "steps": 0}) for _ in range(4)]
    for job in others:
        await wait_for(engine, job.id, lambda job: job.status is JobStatus.SUCCEEDED)
    await eventually(lambda: stuck.id not in worker.attempts.snapshot(), timeout_s=10)
    assert (await get_job(engine, tenant="t", job_id=stuck.id)).status is JobStatus.RUNNING  # to the reaper


async def test_jobs_blocking_work_runs_on_their_workers_threads_and_leaves_the_default_pool_to_requests(
    engine: AsyncEngine, registry: KindRegistry
) -> None:
    """Four jobs each blocked in a thread, under a default pool of two threads (as if every request thread
    were taken): a request's blocking call still gets a thread at once, and the jobs' calls, through
    `ctx.to_thread` and through a helper's `threads.to_thread` alike, ran on the worker's own threads."""
    default_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="default")
    asyncio.get_running_loop().set_default_executor(default_pool)
    release = threading.Event()
    blocked: list[str] = []

    def block() -> str:
        blocked.append(threading.current_thread().name)
        release.wait(10)
        return threading.current_thread().name

    @registry.kind("blocker")
    async def blocker(ctx: JobContext, data: dict[str, Any]) -> dict[str, str]:
        by_context = await ctx.to_thread(block)
        by_helper = await threads.to_thread(lambda: threading.current_thread().name)
        return {"by_context": by_context, "by_helper": by_helper}

    worker = Worker(engine, registry, FAST, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        jobs = [await submit(engine, registry, kind="blocker", input={}) for _ in range(FAST.concurrency)]
        await eventually(lambda: len(blocked) == FAST.concurrency)
        # A request's call, outside any job: the default pool, free although every job holds a thread.
        request_thread = await asyncio.wait_for(threads.to_thread(lambda: threading.current_thread().name), 2)
        assert request_thread.startswith("default")
        release.set()
        done = [await wait_for(engine, job.id, finished) for job in jobs]
    finally:
        release.set()
        await worker.stop(grace_s=1)
        default_pool.shutdown(wait=False)
    assert all(job.status is JobStatus.SUCCEEDED for job in done)
    names = [name for job in done for name in (job.result or {}).values()]
    assert len(names) == 2 * FAST.concurrency
    assert all(name.startswith("inferline-job") for name in names), names
    assert worker.attempts.threads.closed
