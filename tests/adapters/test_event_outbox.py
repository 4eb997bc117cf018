"""Job changes, alerts and (tests/api/test_events_api.py) batches write their events to the outbox in their own
transaction, on SQLite and PostgreSQL (the job core's on MariaDB too), and only when the engine has events on."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.event_brokers import outbox_events

from inferline import db
from inferline.clock import utcnow
from inferline.db import SqliteWriter
from inferline.events import outbox
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import Outcome, reap_jobs, record_outcomes
from inferline.jobs.service import cancel_job, claim_jobs, retry_job
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter, new_job
from inferline.leases import Lease, acquire
from inferline.metrics import Metrics
from inferline.monitor import samples
from inferline.monitor.evaluator import LEASE as EVALUATOR
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.notifier import Notifier
from inferline.monitor.rules import RuleIn, create_rule
from inferline.monitor.samples import HOUR, MINUTE, RAW, Sample
from inferline.outbound import OutboundPolicy
from inferline.schema import event_outbox

ECHO = {"message": "x", "steps": 0}


def events_on(engine: AsyncEngine) -> AsyncEngine:
    engine.update_execution_options(**{outbox.EVENTS_OPTION: True})
    return engine


async def events(engine: AsyncEngine) -> list[dict[str, Any]]:
    return await outbox_events(engine)


def submitter(engine: AsyncEngine, **kw: Any) -> Submitter:
    registry = KindRegistry()
    register_echo(registry)
    return Submitter(engine, registry, default_max_attempts=2, **kw)


async def claim(engine: AsyncEngine, owner: str = "w1", lease_s: float = 30.0) -> list[Any]:
    return await claim_jobs(engine, owner=owner, kinds=["echo"], limit=10, lease_s=lease_s, kind_limits={})


@pytest.mark.mariadb_too
async def test_a_rolled_back_change_writes_no_event_and_a_committed_one_writes_its_own(engine: AsyncEngine) -> None:
    events_on(engine)
    job = new_job(JobRequest("echo", ECHO), tenant="a", now=utcnow(), default_max_attempts=1)
    with pytest.raises(RuntimeError):
        async with db.write(engine) as conn:
            await JobStore(conn).add([job])
            assert len(await events_in(conn)) == 1  # written, then rolled back with the job
            raise RuntimeError("the use case failed after the insert")
    assert await events(engine) == []
    async with db.write(engine) as conn:
        await JobStore(conn).add([job])
    [event] = await events(engine)
    assert (event["type"], event["subject"], event["tenant"]) == ("job.queued", job.id, "a")
    assert event["data"]["status"] == "queued" and event["data"]["id"] == job.id and event["sent_at"] is None


async def events_in(conn: Any) -> list[Any]:
    return list(await conn.execute(sa.select(event_outbox.c.seq)))


@pytest.mark.mariadb_too
async def test_no_events_are_written_when_events_are_off(engine: AsyncEngine) -> None:
    await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a")
    await claim(engine)
    assert await events(engine) == []


@pytest.mark.mariadb_too
async def test_a_job_life_writes_one_event_per_change_in_order(engine: AsyncEngine) -> None:
    events_on(engine)
    policy, metrics = RetryPolicy(base_s=0, cap_s=0), Metrics()
    job, _ = await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a")
    [claimed] = await claim(engine)
    await record_outcomes(
        engine, owner="w1", items=[(claimed, Outcome("failed", message="boom"))], policy=policy, metrics=metrics
    )
    [claimed] = await claim(engine)
    await record_outcomes(
        engine, owner="w1", items=[(claimed, Outcome("succeeded", result={"n": 1}))], policy=policy, metrics=metrics
    )
    written = await events(engine)
    assert [e["type"] for e in written] == ["job.queued", "job.running", "job.retrying", "job.running", "job.succeeded"]
    assert {e["subject"] for e in written} == {job.id}
    assert written[2]["data"]["error"]["message"] == "boom" and written[2]["data"]["status"] == "queued"
    done = written[-1]["data"]
    assert (done["status"], done["attempts"], done["progress"]) == ("succeeded", 2, 100.0)
    assert done["finished_at"] == written[-1]["time"].isoformat() == done["updated_at"]
    assert "result" not in done and "input" not in done  # consumers GET the job for those
    assert len({e["id"] for e in written}) == 5


@pytest.mark.mariadb_too
async def test_a_batch_of_outcomes_writes_each_jobs_event(engine: AsyncEngine) -> None:
    events_on(engine)
    jobs = [(await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a"))[0] for _ in range(3)]
    claimed = await claim(engine)
    outcomes = [Outcome("succeeded"), Outcome("failed", retryable=False, message="no"), Outcome("released")]
    await record_outcomes(
        engine, owner="w1", items=list(zip(claimed, outcomes, strict=True)), policy=RetryPolicy(), metrics=Metrics()
    )
    ends = {e["subject"]: e["type"] for e in (await events(engine))[6:]}
    assert ends == {jobs[0].id: "job.succeeded", jobs[1].id: "job.failed", jobs[2].id: "job.released"}


@pytest.mark.mariadb_too
async def test_cancels_retries_and_expired_leases_write_their_events(engine: AsyncEngine) -> None:
    events_on(engine)
    first, _ = await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a")
    await cancel_job(engine, tenant="a", job_id=first.id)  # queued: canceled at once
    second, _ = await submitter(engine).submit(JobRequest("echo", ECHO, max_attempts=1), tenant="a")
    await claim(engine, lease_s=0.01)
    await cancel_job(engine, tenant="a", job_id=second.id)  # running: asked to stop
    third, _ = await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a")
    await claim(engine, lease_s=0.01)
    later = utcnow() + timedelta(seconds=1)
    await reap_jobs(engine, policy=RetryPolicy(), metrics=Metrics(), now=later)
    by_job = {}
    for e in await events(engine):
        by_job.setdefault(e["subject"], []).append(e["type"])
    assert by_job[first.id] == ["job.queued", "job.canceled"]
    assert by_job[second.id] == ["job.queued", "job.running", "job.cancel_requested", "job.canceled"]
    assert by_job[third.id] == ["job.queued", "job.running", "job.lease_expired"]
    async with db.write(engine) as conn:  # fail it for good, then retry it through the use case
        store = JobStore(conn)
        job = await store.get(third.id)
        assert job is not None
        assert await store.save(replace(job, status=job.status.FAILED), expect_status=job.status)
    await retry_job(engine, tenant="a", job_id=third.id)
    assert [e["type"] for e in await events(engine)][-2:] == ["job.failed", "job.requeued"]


async def test_the_sqlite_one_hop_writer_writes_events_too(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    db.upgrade(url)
    engine = events_on(db.create_engine(url))
    writer = SqliteWriter(engine)
    try:
        job, _ = await submitter(engine, sqlite_writer=writer).submit(JobRequest("echo", ECHO), tenant="a")
        assert [(e["type"], e["subject"]) for e in await events(engine)] == [("job.queued", job.id)]
    finally:
        writer.close()
        await engine.dispose()


@pytest.mark.mariadb_too
async def test_a_claim_of_several_jobs_is_one_outbox_row_with_their_events_in_order(engine: AsyncEngine) -> None:
    events_on(engine)
    jobs = [(await submitter(engine).submit(JobRequest("echo", ECHO), tenant="a"))[0] for _ in range(3)]
    claimed = await claim(engine)
    running = [e for e in await events(engine) if e["type"] == "job.running"]
    assert [e["subject"] for e in running] == [job.id for job in claimed] and len(claimed) == 3
    assert {e["seq"] for e in running} == {running[0]["seq"]} and [e["index"] for e in running] == [0, 1, 2]
    assert {e["subject"] for e in running} == {job.id for job in jobs}
    async with db.read(engine) as conn:
        counts = (await conn.execute(sa.select(event_outbox.c.events).order_by(event_outbox.c.seq))).scalars().all()
    assert counts == [1, 1, 1, 3]  # three submissions, one claim


async def test_an_alert_writes_firing_when_it_starts_and_resolved_not_its_repeats(engine: AsyncEngine) -> None:
    events_on(engine)
    metrics = Metrics()
    notifier = Notifier(
        {}, outbound=OutboundPolicy(), metrics=metrics, attempts=1, timeout_s=1, breaker_failures=3, cooldown_s=60
    )
    evaluator = Evaluator(engine, notifier, metrics, {RAW: 86_400.0, MINUTE: 86_400.0, HOUR: 86_400.0})
    rule = RuleIn(name="deep", metric="queue_depth", comparator="gt", threshold=10, window_s=60, repeat_s=60)
    await create_rule(engine, rule, channels={})
    lease = Lease(EVALUATOR, "test")
    assert await acquire(engine, lease.name, lease.owner, ttl_s=60)
    start = utcnow()

    async def step(seconds: float, depth: float) -> list[str]:
        at = start + timedelta(seconds=seconds)
        async with db.write(engine) as conn:
            await samples.insert(conn, [Sample("queue_depth", depth, {"kind": "ocr"})], at)
        return [t.event for t in await evaluator.step(lease, at)]

    try:
        assert await step(0, 50) == ["firing"]
        assert await step(70, 50) == ["firing"]  # a repeated notification: no event
        assert await step(80, 1) == ["resolved"]
    finally:
        await notifier.aclose()
    written = await events(engine)
    assert [e["type"] for e in written] == ["alert.firing", "alert.resolved"]
    firing, resolved = written
    assert firing["subject"] == resolved["subject"] == firing["data"]["id"] and firing["tenant"] == ""
    assert firing["data"]["state"] == "firing" and firing["data"]["labels"] == {"kind": "ocr"}
    assert resolved["data"]["state"] == "resolved" and resolved["data"]["resolved_at"] is not None
    assert firing["time"] == start and resolved["time"] == start + timedelta(seconds=80)
